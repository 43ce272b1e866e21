"""Sample data shipped inside the wheel as ``hrfast.sample_data`` (see ``hrfast.samples``)."""
