"""Custom ops: thin typed fronts over ``torch.ops.hrfast`` with their reference twins."""
