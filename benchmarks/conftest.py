import sys
from pathlib import Path

# the numpy transcriptions of the official per-sample code are the baselines
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
