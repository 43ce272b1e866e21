#!/usr/bin/env bash
# What a session with a lent GPU (H100/H200, the device tool) runs, in few long calls.
#
# The GPU image has its own Python 3.12, torch and triton, reaches no package index, and lacks
# pycocotools. So, first, on the development machine:
#     bash benchmarks/gpu_session.sh wheels      # .whl/: pycocotools for cp312, git-ignored
# then ONE device call (15 minutes of device time in all, the machine's start included; no new
# machine starts with under 4 minutes left), with carry [".whl"] and timeout_s 600:
#     bash benchmarks/gpu_session.sh all         # build, GPU suites (parallel), exchange units and
#                                                # dispatch, whole model, memcheck: each step
#                                                # capped, the whole model kept 150 s, all within
#                                                # BUDGET (520 s; "plan" prints the caps), every
#                                                # log and report under $OUT as it goes. A missing
#                                                # wheel, a failed build or a GPU without CUDA ops
#                                                # stops it at once (FAILED in summary.txt)
# Also here, before the call (optional, about 10 minutes; the first run downloads a CUDA torch):
#     bash benchmarks/gpu_session.sh image       # the whole suite under the GPU image's Python,
#                                                # torch and Triton, _C built with CUDA ops by
#                                                # the local nvcc (IMAGE_TORCH, IMAGE_TRITON, IMAGE_PY)
# The single stages, for a later session with time left:
#     bash benchmarks/gpu_session.sh tests       # build; the GPU suites on CUDA (Triton kernels,
#                                                # C++/CUDA ops, footage crops); the C++/CUDA ops
#                                                # again under compute-sanitizer memcheck
#     bash benchmarks/gpu_session.sh exchange    # benchmarks/exchange_gpu.py: units, launches,
#                                                # memory, the per-shape dispatch (about 5 min)
#     EXCHANGE_ARGS="--model --no-units" bash benchmarks/gpu_session.sh exchange   # whole model
#     bash benchmarks/gpu_session.sh model       # hrfast bench --compare (W32, W48; batch 1, 32)
#         (max-autotune compiles every variant: if one call nears 10 minutes, split it, e.g.
#         CONFIGS=w32_256x192 ... model, then CONFIGS=w48_384x288 ... model)
#     CONFIGS="face_hrnetv2_w18_wflw_256 seg_hrnetv2_w48_cityscapes_1024x512" BATCHES="1 8" \
#         bash benchmarks/gpu_session.sh model   # the HRNet family: HRNetV2's bilinear units
#                                                # fused (inference rows; --train is pose-only)
#     bash benchmarks/gpu_session.sh video       # benchmarks/video_pipeline.py on CUDA: people/s,
#                                                # time by stage, crops as one grid_sample per frame
#     bash benchmarks/gpu_session.sh suites [pytest args, e.g. -k "exchange or ops"]
# Reports and logs go to $OUT (the device tool brings back at most 8 files a call: "model"
# writes 7 with the default knobs); copy the
# figures, the device and the versions into benchmarks/RESULTS.md ("GPU").
# Knobs for a dry run elsewhere: BUDGET (520 s, "all"), STEPS (of "all": "tests exchange model
# memcheck"), WARM (1: the warm runs of "all"; 0: none), SKIP_BUILD, TESTS (the test files and arguments of "all" and "tests"), WORKERS
# (8; 0 runs the tests in one process), DEVICE (cuda), CONFIGS ("w32_256x192 w48_384x288"),
# BATCHES ("1 32"), ITERS (20), EXCHANGE_ARGS (extra arguments of exchange_gpu.py, e.g.
# "--tiny" on the CPU, "--max-autotune" when time allows).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_session.sh wheels|image|plan|all|tests|exchange|model|video|suites [pytest args]}
shift || true
OUT=${OUT:-outputs/gpu}
# The tests that touch the GPU: the Triton files run every case on CUDA when it is there, the
# native ops' files hold their CUDA cases beside the CPU ones, and two footage tests are CUDA's
# (test_optimize.py has none: CI runs it).
# test_norm_act.py last: xdist hands tests out in this order, so a run cut by its cap loses the
# newest cases, not the units' and the native ops'.
GPU_TESTS=(tests/test_fused_ops.py tests/test_fused_exchange.py tests/test_train_step.py tests/test_targets.py tests/test_decode.py
           tests/test_nms.py tests/test_heatmap_loss.py tests/test_footage.py::test_device_crops_equal_opencv_crops
           tests/test_footage.py::test_pose_estimator_on_cuda_equals_the_cpu tests/test_norm_act.py)
[ -n "${TESTS:-}" ] && read -r -a GPU_TESTS <<< "$TESTS"   # a dry run's own selection
mkdir -p "$OUT"
PY=${PY:-python3}

# fail: one line to the summary and stderr, then exit with status $1 (a call that cannot
# measure anything ends in seconds, while the machine is still warm for a second try)
fail() {
    local rc=$1
    shift
    echo "gpu_session: FAILED: $*" | tee -a "$OUT/summary.txt" >&2
    exit "$rc"
}

setup() {
    if ! $PY -c "import pycocotools" 2> /dev/null; then
        local wheels=${WHEELS:-.whl}   # the carried folder (a dry run may point elsewhere)
        compgen -G "$wheels/*.whl" > /dev/null || fail 3 "pycocotools is missing and no $wheels/ was carried" \
            "(here: bash benchmarks/gpu_session.sh wheels; then run with carry [\".whl\"])"
        # --target: the image's site-packages stay untouched; nothing is fetched
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$wheels"/*.whl || fail 3 "the carried wheels in $wheels/ do not install: $(ls "$wheels")"
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    # Hopper only: one arch keeps the CUDA build short; --no-deps: the image's packages are used.
    # SKIP_BUILD=1: a dry run where hrfast is installed already.
    if [ -z "${SKIP_BUILD:-}" ]; then
        MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} timeout "${BUILD_TIMEOUT:-180}" \
            $PY -m pip install -q --no-build-isolation --no-deps -e . > /tmp/hrfast_build.log 2>&1 \
            || { tail -5 /tmp/hrfast_build.log >> "$OUT/summary.txt"; tail -30 /tmp/hrfast_build.log;
                 fail 1 "the build failed or ran past ${BUILD_TIMEOUT:-180} s"; }
        tail -3 /tmp/hrfast_build.log | sed 's/^/build: /' >> "$OUT/summary.txt"
    fi
    echo "nvcc: $(command -v nvcc > /dev/null && nvcc --version | tail -1 || echo 'not found')" | tee "$OUT/versions.txt"
    local rc=0
    $PY benchmarks/gpu_versions.py >> "$OUT/versions.txt" || rc=$?
    cat "$OUT/versions.txt"
    (( rc == 0 )) || fail "$rc" "the CUDA ops did not build (versions.txt: nvcc and torch's CUDA must match)"
}

# boxed CAP NAME CMD...: CMD under a timeout of CAP seconds or what is left before $deadline,
# whichever is less; skipped with under 30 s left. One line per step in $OUT/summary.txt.
wants() {   # whether step $1 is among $STEPS
    [[ " ${STEPS:-tests exchange model memcheck} " == *" $1 "* ]]
}

boxed() {
    local cap=$1 name=$2 left rc=0 t0
    shift 2
    wants "$name" || return 0
    left=$(( deadline - $(date +%s) ))
    (( left < cap )) && cap=$left
    if (( cap < 30 )); then
        echo "gpu_session: $name skipped (${left} s left)" | tee -a "$OUT/summary.txt"
        return 0
    fi
    t0=$(date +%s)
    # through bash -c: timeout runs programs, and the steps may be this script's functions
    timeout "$cap" bash -c '"$@"' "$name" "$@" || rc=$?
    echo "gpu_session: $name exit $rc after $(( $(date +%s) - t0 )) s (limit $cap s)$([ $rc = 124 ] && echo ', TIMED OUT')" \
        | tee -a "$OUT/summary.txt"
}

# The GPU suites on as many workers as the image's pytest-xdist allows (Triton compiles each
# kernel variant on the CPU, one process at a time).
gpu_tests() {
    local par=()
    $PY -c "import xdist" 2> /dev/null && par=(-n "${WORKERS:-8}")
    # -v: a line per test as it ends, so a run cut short still names what passed and failed
    PYTHONUNBUFFERED=1 $PY -m pytest -v --tb=short -p no:cacheprovider -rs "${par[@]}" --durations=15 "$@" \
        > "$OUT/tests.log" 2>&1
}

memcheck() {
    if ! command -v compute-sanitizer > /dev/null; then
        echo "compute-sanitizer not found: memcheck skipped" > "$OUT/memcheck.log"
        return 0
    fi
    PYTHONUNBUFFERED=1 compute-sanitizer --tool memcheck --error-exitcode 3 $PY -m pytest -q -p no:cacheprovider \
        tests/test_targets.py tests/test_decode.py tests/test_nms.py tests/test_heatmap_loss.py -k cuda \
        > "$OUT/memcheck.log" 2>&1
}

# Warm runs of the timed steps (exchange_gpu.py --warm), one process per stage and mode of the
# units and one per compiled variant and mode of the whole model (its channels_last weights
# make other kernel variants than the units' NCHW ones; a single model process had about 130
# variants and four Inductor compiles to do in a row and was always killed), each in a
# session of its own so that it can be stopped with its compile workers: they fill the
# on-disk Triton and Inductor caches while the tests run, and are waited for (at most $1 s)
# and stopped before anything is timed.
WARM_PIDS=()
start_warm() {
    local s m
    rm -f /tmp/warm_*.log
    for s in 4 3 2; do
        for m in infer train; do
            setsid $PY benchmarks/exchange_gpu.py --warm --batch 64 --stages $s --modes $m ${EXCHANGE_ARGS:-} \
                > "/tmp/warm_${s}_$m.log" 2>&1 &
            WARM_PIDS+=($!)
        done
    done
    for v in fused optimize; do      # eager and eager fp32 run cuDNN: nothing to compile
        for m in infer train; do
            setsid $PY benchmarks/exchange_gpu.py --warm --batch 64 --model --no-units --model-variants "$v" \
                --modes $m ${EXCHANGE_ARGS:-} > "/tmp/warm_model_${v}_$m.log" 2>&1 &
            WARM_PIDS+=($!)
        done
    done
}
stop_warm() {
    local waited=0 p alive
    while (( waited < $1 )); do
        alive=0
        for p in "${WARM_PIDS[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
        (( alive )) || break
        sleep 2
        waited=$(( waited + 2 ))
    done
    for p in "${WARM_PIDS[@]}"; do kill -- "-$p" 2> /dev/null || true; done
    # done: the run printed WARM DONE; failed: a traceback; killed: neither (stopped above)
    local done_=0 failed=0 killed=0 f
    for f in /tmp/warm_*.log; do
        if grep -q "^WARM DONE" "$f"; then
            done_=$(( done_ + 1 ))
        elif grep -q Traceback "$f"; then
            failed=$(( failed + 1 ))
            tail -2 "$f" | sed "s|^|$(basename "$f"): |" >> "$OUT/summary.txt"
        else
            killed=$(( killed + 1 ))
            echo "$(basename "$f"): killed while compiling" >> "$OUT/summary.txt"
        fi
    done
    echo "gpu_session: warm runs of ${#WARM_PIDS[@]}: $done_ done, $killed killed, $failed failed," \
         "after $waited s more" | tee -a "$OUT/summary.txt"
    WARM_PIDS=()
}
trap 'if (( ${#WARM_PIDS[@]} )); then stop_warm 0; fi' EXIT   # no session left running

export -f gpu_tests memcheck
export PY OUT

# The budget of "all" (seconds): BUDGET in all; the tests and the units have caps, the warm
# runs are waited for at most WARM_WAIT after the tests, and the whole model keeps MODEL_MIN
# (its step and optimize rows need them); memcheck uses the margin kept for the copy back.
BUDGET=${BUDGET:-520}
BUILD_EST=${BUILD_EST:-90}         # what the build of _C for sm_90 is planned to take (its timeout: BUILD_TIMEOUT)
TESTS_CAP=${TESTS_CAP:-110}
WARM_WAIT=${WARM_WAIT:-20}
EXCHANGE_CAP=${EXCHANGE_CAP:-120}
MODEL_MIN=${MODEL_MIN:-150}
MEMCHECK_CAP=${MEMCHECK_CAP:-40}

case "$stage" in
plan)
    # what "all" plans, step by step, before anything runs (the dry-run test checks the sum)
    for step in "build $BUILD_EST" "tests $TESTS_CAP" "warm $WARM_WAIT" "exchange $EXCHANGE_CAP" \
                "model $MODEL_MIN" "memcheck $MEMCHECK_CAP"; do echo "$step"; done
    echo "total $(( BUILD_EST + TESTS_CAP + WARM_WAIT + EXCHANGE_CAP + MODEL_MIN + MEMCHECK_CAP ))"
    ;;
all)
    deadline=$(( $(date +%s) + BUDGET ))
    : > "$OUT/summary.txt"
    t0=$(date +%s)
    setup
    echo "gpu_session: build $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
    # correctness first: every GPU test, then the figures, the units' before the whole model's
    if wants exchange && [ "${WARM:-1}" = 1 ]; then start_warm; fi
    boxed "$TESTS_CAP" tests gpu_tests "${GPU_TESTS[@]}"
    if (( ${#WARM_PIDS[@]} )); then stop_warm "$WARM_WAIT"; fi
    # stage 4 first, inference before training; the whole model keeps MODEL_MIN seconds
    ex_cap=$(( deadline - $(date +%s) - MODEL_MIN ))
    (( ex_cap > EXCHANGE_CAP )) && ex_cap=$EXCHANGE_CAP
    boxed "$ex_cap" exchange env PYTHONUNBUFFERED=1 $PY benchmarks/exchange_gpu.py --batch 64 --stages 4 3 2 \
        --report "$OUT/exchange.md" ${EXCHANGE_ARGS:-} > "$OUT/exchange.log" 2>&1
    boxed 600 model env PYTHONUNBUFFERED=1 $PY benchmarks/exchange_gpu.py --batch 64 --model --no-units \
        --report "$OUT/model.md" ${EXCHANGE_ARGS:-} > "$OUT/model.log" 2>&1
    deadline=$(( deadline + 45 ))   # memcheck may use the margin kept for the copy back
    boxed "$MEMCHECK_CAP" memcheck memcheck
    tail -5 "$OUT/tests.log" 2> /dev/null || true
    for f in exchange model; do [ -s "$OUT/$f.md" ] && cat "$OUT/$f.md"; done
    cat "$OUT/summary.txt"
    ;;
wheels)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pycocotools
    ls .whl
    ;;
image)
    # Here, before a GPU call: the GPU image's Python, torch and Triton (IMAGE_PY, IMAGE_TORCH,
    # IMAGE_TRITON) in a venv of their own (IMAGE_VENV, kept between runs; the CUDA torch is
    # several GB the first time), _C built in a clone of HEAD with its CUDA ops for sm_90 by
    # the local nvcc, then the whole suite in the interpreter. Triton 3.6's interpreter needs
    # NumPy < 2.4 (hrfast.kernels.launch.interpreter_problem); the image's 2.5 only matters
    # there. test_packaging.py is left out: it builds wheels in fresh venvs from the index.
    venv=${IMAGE_VENV:-/tmp/hrfast-gpu-image}
    src=$venv/src
    if [ ! -x "$venv/bin/python" ]; then
        ${IMAGE_PY:-python3.12} -m venv "$venv" || fail 2 "no ${IMAGE_PY:-python3.12} to make $venv"
    fi
    "$venv/bin/python" -m pip install -q "torch==${IMAGE_TORCH:-2.11.0}" "triton==${IMAGE_TRITON:-3.6.0}" \
        "numpy<2.4" pycocotools pyyaml tqdm pillow packaging "opencv-python-headless>=4.5,<5" pytest ninja \
        setuptools wheel matplotlib scipy || fail 1 "the image's packages did not install in $venv"
    rm -rf "$src" && git clone -q . "$src"
    t0=$(date +%s)
    (cd "$src" && HRFAST_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 "$venv/bin/python" -m pip install -q --no-build-isolation \
        --no-deps -e . > "$OUT/image_build.log" 2>&1) || fail 1 "the build failed: $OUT/image_build.log"
    echo "gpu_session: image build $(( $(date +%s) - t0 )) s" | tee "$OUT/summary.txt"
    (cd "$src" && "$venv/bin/python" -c "import sys, torch, triton, numpy; from hrfast._extension import has_cuda_ops
print(f'python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, numpy {numpy.__version__}, CUDA ops {has_cuda_ops()}')") \
        | tee -a "$OUT/summary.txt"
    echo "gpu_session: the suite under these versions (about 6 minutes on 2 cores): $OUT/image_tests.log"
    (cd "$src" && TRITON_INTERPRET=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -rfE tests \
        --deselect tests/test_packaging.py "$@") > "$OUT/image_tests.log" 2>&1 || rc=$?
    tail -1 "$OUT/image_tests.log" | tee -a "$OUT/summary.txt"
    exit "${rc:-0}"
    ;;
tests)
    setup
    # The suites that touch the GPU (the Triton tests pick CUDA when it is there: no
    # TRITON_INTERPRET; the GPU-only tests run too). The rest is CPU code that CI covers; pass
    # "tests" as an argument for the whole suite when a call has the time.
    deadline=$(( $(date +%s) + 540 ))
    boxed 480 tests gpu_tests "${@:-${GPU_TESTS[@]}}"
    tail -40 "$OUT/tests.log"
    # the native ops' CUDA kernels against the CPU again, under the memory checker
    boxed 60 memcheck memcheck
    tail -15 "$OUT/memcheck.log"
    ;;
exchange)
    setup
    # units of stages 2-4 and the per-shape dispatch; EXCHANGE_ARGS="--model --no-units" for the
    # whole model in a call of its own (its torch.compile variants take minutes)
    PYTHONUNBUFFERED=1 timeout 540 $PY benchmarks/exchange_gpu.py --batch 64 --report "$OUT/exchange.md" \
        ${EXCHANGE_ARGS:-} 2>&1 | tee "$OUT/exchange.log" | tail -60
    ;;
model)
    setup
    first=1
    for cfg in ${CONFIGS:-w32_256x192 w48_384x288}; do
        for b in ${BATCHES:-1 32}; do
            extra=()
            [ "$b" != 1 ] && extra+=(--train)         # training at the larger batch only
            [ $first = 1 ] && extra+=(--png "$OUT/model_${DEVICE:-cuda}.png") && first=0
            PYTHONUNBUFFERED=1 $PY -m hrfast bench --compare --device "${DEVICE:-cuda}" --config "$cfg" \
                --batch "$b" --iters "${ITERS:-20}" --report "$OUT/model_${DEVICE:-cuda}_${cfg}_b$b.md" \
                "${extra[@]}" >> "$OUT/model.log" 2>&1 || { tail -30 "$OUT/model.log"; exit 1; }
        done
    done
    cat "$OUT"/model_*.md
    ;;
video)
    setup
    PYTHONUNBUFFERED=1 timeout 300 $PY benchmarks/video_pipeline.py --device "${DEVICE:-cuda}" \
        --report "$OUT/video.md" 2>&1 | tee "$OUT/video.log" | tail -20
    ;;
suites)
    setup
    PYTHONUNBUFFERED=1 $PY -m pytest -q benchmarks -p no:cacheprovider --benchmark-columns=median,ops \
        --benchmark-sort=name --benchmark-json "$OUT/suites.json" "$@" 2>&1 | tee "$OUT/suites.log" | tail -60
    ;;
*)
    echo "unknown stage '$stage': wheels, image, plan, all, tests, exchange, model, video or suites" >&2
    exit 2
    ;;
esac
