"""The measuring tools behind ``hrfast bench`` and ``benchmarks/``: they must report what they
claim (which callable took how long, how much memory a call added). No speed is asserted."""
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from hrfast.benchmarking import (
    TRAINING_VARIANTS,
    inference_variant,
    measure_interleaved,
    peak_memory_mib,
    training_variant,
)
from hrfast.device import cpu_has_native_bf16
from hrfast.kernels.launch import HAS_TRITON


def test_measure_interleaved_keeps_each_callable_its_own_time():
    # sleeps stand in for work of known length: a sleep never ends early, and 50x apart no
    # load on the machine swaps them (the short one would have to be delayed by 100 ms)
    fast, slow = (lambda: time.sleep(0.002)), (lambda: time.sleep(0.1))
    a, b, c = measure_interleaved([fast, slow, fast], torch.device("cpu"), iters=3)
    assert a >= 0.002 and c >= 0.002 and b >= 0.1
    assert b > a and b > c


def test_measure_interleaved_interleaves_rounds():
    calls = []
    measure_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], torch.device("cpu"), iters=3)
    assert calls == ["a", "b"] * 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU peak memory reads /proc/self (Linux)")
def test_cpu_peak_memory_sees_a_temporary_allocation():
    def allocate(mib):
        def fn():
            t = torch.ones(mib * 2 ** 20 // 4)    # ones: every page is touched, so resident
            del t
        return fn
    first = peak_memory_mib(allocate(64), "cpu")
    if first != first:
        pytest.skip("/proc/self/clear_refs is not writable in this sandbox: the CPU peak reads n/a here")
    # the allocation is freed before fn returns: only the high-water mark can see it.
    # Tolerance: a few MiB of interpreter and allocator noise around the 64 MiB
    assert 60 < first < 72
    assert peak_memory_mib(allocate(0), "cpu") < 4
    # earlier freed memory must not hide the next call's allocation (glibc keeps free lists)
    assert 120 < peak_memory_mib(allocate(128), "cpu") < 136
    assert 60 < peak_memory_mib(allocate(64), "cpu") < 72


def sleep_job(seconds: float, log: str, label: str):
    """A job for time_isolated (top level: the spawned worker imports it): sleeps, and appends
    its label to ``log`` at each call."""
    def call():
        with open(log, "a") as f:
            f.write(label + "\n")
        time.sleep(seconds)
    return call, {"pid": os.getpid()}


def failing_job():
    raise ValueError("no such runtime")


def test_time_isolated_runs_each_job_in_its_own_process_in_interleaved_rounds(tmp_path):
    from hrfast.benchmarking.isolated import time_isolated
    log = str(tmp_path / "calls.txt")
    rows, (fast, slow) = time_isolated([("fast", sleep_job, (0.002, log, "a")),
                                        ("slow", sleep_job, (0.1, log, "b"))], iters=3)
    assert [r["variant"] for r in rows] == ["fast", "slow"]
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    # the build calls nothing; then one call of each per round, one job at a time
    assert Path(log).read_text().split() == ["a", "b"] * 3
    # sleeps never end early, and 50x apart no machine load swaps them
    assert fast >= 0.002 and slow >= 0.1 and slow > fast


def test_a_job_that_fails_is_named():
    from hrfast.benchmarking.isolated import time_isolated
    with pytest.raises(RuntimeError, match="variant 'openvino f64': ValueError: no such runtime"):
        time_isolated([("openvino f64", failing_job, ())], iters=1)


def test_compare_inference_isolated_gives_every_variant_a_row():
    """The default CPU timing: each variant built and timed in its own process."""
    import importlib.util

    from hrfast.benchmarking import compare_inference
    names = ("eager fp32", "openvino fp32") if importlib.util.find_spec("openvino") else ("eager fp32", "eager AMP")
    rows = compare_inference("w18_small_128x96", 2, "cpu", variants=names, iters=1, progress=False)
    assert [r["variant"] for r in rows] == list(names)
    assert rows[0]["ratio"] == 1.0 and all(r["images_per_s"] > 0 and r["first_call_s"] > 0 for r in rows)
    assert rows[0]["dtype"] == torch.float32


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'eager fp64'"):
        inference_variant(torch.nn.Identity(), "eager fp64", "cpu")
    with pytest.raises(ValueError, match="unknown training variant 'eager fp64'.*compiled"):
        training_variant(torch.nn.Identity(), "eager fp64", 2, "cpu")


def test_training_variants_start_equal_and_use_their_optimizer():
    """The baseline steps with torch's default Adam, the others with the engine's fused one; all
    train copies of the same weights (so the ratios compare like with like) and leave the
    caller's model alone."""
    from hrfast.models import HRNet
    torch.manual_seed(0)
    model = HRNet.from_config("w18_small_128x96")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = {n: training_variant(model, n, 1, "cpu") for n in TRAINING_VARIANTS}
    assert steps["eager fp32"].dtype == torch.float32
    assert steps["optimize(mode='training')"].dtype == torch.bfloat16 or not cpu_has_native_bf16()
    for step in steps.values():
        step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    fused = {n: bool(step.optimizer.param_groups[0]["fused"]) for n, step in steps.items()}
    assert fused == {"eager fp32": False, "eager fp32, fused Adam": True, "optimize(mode='training')": True}


@pytest.mark.skipif(not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the dry run needs Triton's interpreter (make test sets TRITON_INTERPRET=1)")
def test_exchange_gpu_report_dry_run(tmp_path, monkeypatch, capsys):
    """benchmarks/exchange_gpu.py, which the GPU session runs, works end to end (tiny shapes on
    the CPU interpreter): a row per variant, the fused one with its launch count."""
    # restored after the test: spawned processes inherit sys.path, and benchmarks/ has a
    # conftest of its own that must not shadow tests/conftest.py there
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import exchange_gpu
    report = tmp_path / "exchange.md"
    text = exchange_gpu.main(["--tiny", "--stages", "2", "--modes", "infer", "--report", str(report)])
    assert report.read_text().strip() == text.strip()
    assert "| 2 | infer | eager |" in text and "| 2 | infer | fused |" in text and "3 Triton" in text
    # the bytes column: inputs and outputs once in bf16 (4x16x8 and 8x8x4 per image), weights once
    assert "| min MB | GB/s (of copy) |" in text and "copy " in text.splitlines()[0]
    act = 2 * (4 * 16 * 8 + 8 * 8 * 4)
    assert exchange_gpu.unit_bytes([4, 8], 16, 8, 1, "infer", 100) == 2 * act + 200
    assert exchange_gpu.unit_bytes([4, 8], 16, 8, 1, "train", 100) == 2 * act + 200 + 3 * act + 400
    # a variant that raises costs its row, not the report
    from hrfast.ops.exchange import FusedExchange

    def broken(self, unit, xs):
        raise RuntimeError("illegal memory access")
    monkeypatch.setattr(FusedExchange, "__call__", broken)
    text = exchange_gpu.main(["--tiny", "--stages", "2", "--modes", "infer"])
    assert "| 2 | infer | eager |" in text and "failed: RuntimeError: illegal memory access |" in text
    # the whole model: eager bf16, eager fp32 and hrfast.optimize side by side (the fused rows
    # take minutes in the interpreter: the GPU session has them)
    text = exchange_gpu.main(["--tiny", "--model", "--no-units", "--modes", "infer",
                              "--model-variants", "eager,eager fp32,optimize"])
    assert all(f"| model | infer | {v} |" in text for v in ("eager", "eager fp32", "optimize"))
    # the training rows: optimize steps through its train_step (a CUDA graph on CUDA, eager here)
    text = exchange_gpu.main(["--tiny", "--model", "--no-units", "--modes", "train",
                              "--model-variants", "eager fp32,optimize"])
    assert "| model | train | optimize |" in text and "failed" not in text
    # a row whose error is over 3x eager's is WRONG, with no speed-up quoted
    rows = [dict(stage=4, mode="infer", variant=v, ms=1.0, tflops=1.0, of_peak=0.5, mib=1.0, launches=1,
                 err=e, speedup=2.0) for v, e in (("eager", 4e-3), ("fused", 1.3e-2), ("fast", 8e-3))]
    lines = exchange_gpu.report(rows, [], "h").splitlines()
    assert "| fused | 1.000 | WRONG |" in lines[-2] and lines[-2].endswith("1.3e-02 WRONG |")
    assert "| fast | 1.000 | 2.00x |" in lines[-1]
    # a warm run says when it is done (gpu_session.sh tells it from one it had to kill)
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    capsys.readouterr()
    exchange_gpu.main(["--tiny", "--warm", "--stages", "2", "--modes", "infer"])
    assert capsys.readouterr().out.rstrip().endswith("WARM DONE")
    exchange_gpu.WARM[0] = False


@pytest.mark.skipif(not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the dry run needs Triton's interpreter (make test sets TRITON_INTERPRET=1)")
def test_gpu_session_all_stage_dry_run(tmp_path):
    """benchmarks/gpu_session.sh all, the one device call of a GPU session, on the CPU: each
    step runs under its share of the budget (the script's own functions too), writes its log
    and report under $OUT, and lands in the summary; a step with too little time left is
    skipped, not started."""
    import subprocess
    repo = Path(__file__).resolve().parent.parent
    def session(stage, out, **knobs):
        # WARM=0: ten warm-up processes of the interpreter would take minutes on two cores
        env = {**os.environ, "OUT": str(out), "PY": sys.executable, "SKIP_BUILD": "1", "WORKERS": "0", "WARM": "0",
               "TESTS": "tests/test_config.py -k missing_file", "EXCHANGE_ARGS": "--tiny --stages 2 --modes infer",
               **knobs}
        return subprocess.run(["bash", "benchmarks/gpu_session.sh", stage], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
    # the whole model in the interpreter would take minutes: the other steps
    r = session("all", tmp_path / "a", BUDGET="300", STEPS="tests exchange memcheck")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = (tmp_path / "a" / "summary.txt").read_text()
    assert "tests exit 0" in summary and "exchange exit 0" in summary and "memcheck exit 0" in summary, summary
    assert "model" not in summary and "1 passed" in (tmp_path / "a" / "tests.log").read_text()
    assert "| 2 | infer | fused |" in (tmp_path / "a" / "exchange.md").read_text()
    r = session("all", tmp_path / "b", BUDGET="0")
    summary = (tmp_path / "b" / "summary.txt").read_text()
    assert r.returncode == 0 and summary.count("skipped") == 3, summary   # memcheck has the copy-back margin
    bad = session("nosuch", tmp_path / "c")
    assert bad.returncode == 2 and "unknown stage 'nosuch'" in bad.stderr
    # the plan of "all" fits the device call: build, steps and memcheck under 540 s, the whole
    # model kept at least 150 s
    plan = dict(line.split() for line in session("plan", tmp_path / "d").stdout.splitlines())
    assert int(plan["total"]) == sum(int(v) for k, v in plan.items() if k != "total") < 540
    assert int(plan["model"]) >= 150
    # no pycocotools and no carried wheels: one FAILED line at once, before any build
    r = session("all", tmp_path / "e", PY="/bin/false", WHEELS=str(tmp_path / "no_wheels"))
    assert r.returncode == 3 and "FAILED: pycocotools is missing" in (tmp_path / "e" / "summary.txt").read_text()


def test_gpu_session_image_stage_says_what_is_missing(tmp_path):
    """gpu_session.sh image (the suite under the GPU image's versions, here) without the Python
    it asks for: one FAILED line and status 2, before anything is installed."""
    import subprocess
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OUT": str(tmp_path), "IMAGE_VENV": str(tmp_path / "venv"), "IMAGE_PY": "no-such-python3.12"}
    r = subprocess.run(["bash", "benchmarks/gpu_session.sh", "image"], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "FAILED: no no-such-python3.12 to make" in (tmp_path / "summary.txt").read_text()
    assert not (tmp_path / "venv" / "bin").exists()


def test_video_pipeline_benchmark_runs(tmp_path, monkeypatch):
    """benchmarks/video_pipeline.py: a clip written on the fly, its people found (the
    generator's boxes), the stages timed and the share around the network reported."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import video_pipeline
    report = tmp_path / "video.md"
    text = video_pipeline.main(["--config", "w18_small_128x96", "--frames", "6", "--size", "160", "120",
                                "--eager", "--report", str(report)])
    assert report.read_text().strip() == text.strip()
    assert "6 frames" in text and "people/s" in text and "took" in text
    for stage in ("read", "detect", "crop", "network", "decode", "track", "draw"):
        assert f"| {stage} |" in text, stage
    people = int(text.split("6 frames, ")[1].split(" people")[0])
    assert people > 0


def test_onednn_table_sums_what_onednn_ran_in_a_step(monkeypatch):
    """benchmarks/training_step.py --onednn: the verbose lines of a real oneDNN convolution are
    captured from file descriptor 1 and summed by primitive, propagation and implementation;
    lines that are not exec records (oneDNN's info header, create records) count for nothing."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import training_step
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last).requires_grad_()

    def step():
        conv(x).sum().backward()

    log = training_step.onednn_log(step)
    table = training_step.onednn_table(log)
    assert "| convolution | forward_training |" in table and "| convolution | backward_data |" in table
    fake = ("onednn_verbose,v1,info,oneDNN v3\n"
            "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg,forward_training,src,,x,0.5\n"
            "onednn_verbose,v1,primitive,exec,cpu,convolution,brg,forward_training,src,,x,1.5\n"
            "onednn_verbose,v1,primitive,exec,cpu,convolution,brg,forward_training,src,,x,2.5\n"
            "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src,,x,1.0\n")
    rows = training_step.onednn_table(fake).splitlines()[2:]
    assert rows == ["| convolution | forward_training | brg | 2 | 4.0 | 80% |",
                    "| reorder | undef | jit:uni | 1 | 1.0 | 20% |",
                    "| all |  |  | 3 | 5.0 | 100% |"]


def test_profiled_step_counts_the_fused_bn_as_bn(monkeypatch):
    """benchmarks/training_step.py --profile: hrfast's own BN ops (``bn_act``, its backward,
    ``batch_stats``) fall in the BN group, as eager's ``native_batch_norm`` does; they once fell
    in "other", which hid the fused BN's share of the optimized step."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import training_step

    from hrfast.ops.bn_act import applies, bn_act
    x = torch.randn(2, 8, 6, 6).to(memory_format=torch.channels_last).requires_grad_()
    bn = torch.nn.BatchNorm2d(8).train()
    assert applies(bn, x)

    def step():
        bn_act(x, bn).sum().backward()

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    groups = {ev.name: training_step._group(ev) for ev in prof.events() if ev.name.startswith("hrfast::")}
    assert {"hrfast::bn_act", "hrfast::bn_act_backward", "hrfast::batch_stats"} <= set(groups)
    assert set(groups.values()) == {"BN"}
    assert training_step.profile_groups(step, steps=1)["BN"] > 0
