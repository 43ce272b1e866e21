"""Benchmarking: timing and peaks (``measure``, ``peaks``), the variants that are compared
(``variants``), the comparison tables (``compare``) and how results are shown (``report``).
The CLI's ``hrfast bench`` and the suites of ``benchmarks/`` call it."""
from .compare import compare_inference, compare_predict, compare_report, compare_training, machine_name, training_table
from .measure import inference_throughput, measure, measure_interleaved, peak_memory_mib, synchronize, with_ratios
from .peaks import conv_peak, gemm_peak, of_peak
from .report import bar_chart, emit_report
from .variants import (
    COMPILED_TRAINING,
    CPU_VARIANTS,
    INFERENCE_VARIANTS,
    ONEDNN_WGRAD_TRAINING,
    TRAINING_VARIANTS,
    UNFUSED_BN_TRAINING,
    available_inference_variants,
    inference_variant,
    training_variant,
)

__all__ = ["compare_inference", "compare_predict", "compare_report", "compare_training", "machine_name",
           "training_table", "inference_throughput", "measure", "measure_interleaved", "peak_memory_mib",
           "synchronize", "with_ratios", "conv_peak", "gemm_peak", "of_peak", "bar_chart", "emit_report",
           "COMPILED_TRAINING", "CPU_VARIANTS", "INFERENCE_VARIANTS", "ONEDNN_WGRAD_TRAINING", "TRAINING_VARIANTS",
           "UNFUSED_BN_TRAINING", "available_inference_variants", "inference_variant", "training_variant"]
