"""Shared helpers of the benchmark drivers (benchmarks/scripts/*.py): building, running one measurement per fresh
process under a memory cap, machine facts, result files. Python 3.9+, standard library only."""
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_ROOT = ROOT / 'benchmarks' / 'results'
PROJECT = ROOT / 'benchmarks' / 'PolaFormer.Benchmarks'
DLL = PROJECT / 'bin' / 'Release' / 'net10.0' / 'PolaFormer.Benchmarks.dll'
PY_BENCH = ROOT / 'benchmarks' / 'python' / 'bench_attention.py'
GIB = 1 << 30


def machine_tag():
    """A short name of this machine for result folders: $POLA_BENCH_MACHINE, else the CPU's family and core count
    ("AMD EPYC 7B13", 2 cores -> "epyc-2core")."""
    tag = os.environ.get('POLA_BENCH_MACHINE')
    if tag:
        return tag
    model = ''
    try:
        model = next((l.split(':', 1)[1] for l in Path('/proc/cpuinfo').read_text().splitlines()
                      if l.startswith('model name')), '')
    except OSError:
        pass
    noise = {'amd', 'intel', 'intel(r)', 'core(tm)', 'processor', 'cpu', '(r)', '(tm)'}
    words = [w for w in re.split(r'[\s@]+', model.lower()) if w and w not in noise]
    family = re.sub(r'[^a-z0-9]+', '', words[0]) if words else platform.machine()
    return f'{family or "cpu"}-{os.cpu_count() or 1}core'


# Every result of one sitting goes to benchmarks/results/<date>-<machine>/ (the GPU runs sit beside them as
# <date>-<card>/). $POLA_BENCH_RESULTS names the folder instead: the run-*.sh scripts fix it once, so a sitting that
# passes midnight stays in one folder, and render.py renders the folder it names.
RESULTS = RESULTS_ROOT / (os.environ.get('POLA_BENCH_RESULTS')
                          or f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-{machine_tag()}")


def latest_cpu_results():
    """The newest complete CPU sitting, for render.py: a folder with a machine.json (the GPU folders have none) and
    the attention sweep's attention.jsonl (a folder with only, say, FLOP counts is no page of its own)."""
    folders = sorted(p.parent for p in RESULTS_ROOT.glob('*/machine.json') if (p.parent / 'attention.jsonl').exists())
    return folders[-1] if folders else RESULTS

# The .NET GC reserves tens of GiB of address space by default; bounding it keeps the address-space cap below
# about the same for both sides (the benchmarks' managed heap is tiny: the tensors live in LibTorch's native heap).
DOTNET_ENV = {'DOTNET_GCHeapHardLimit': '0x40000000', 'DOTNET_GCRegionRange': '0x40000000',
              'DOTNET_CLI_TELEMETRY_OPTOUT': '1'}


# The PyTorch side: Debian's python3-torch calls the system libblas.so.3. The OpenMP build of OpenBLAS shares
# PyTorch's OpenMP thread pool; the pthread build (Debian's default alternative) runs its own threads, which spin
# beside PyTorch's and oversubscribe a 2-core machine (softmax attention at 3,136 tokens: 596 ms against 241 ms).
# So the OpenMP build is picked per process where it is installed (libopenblas0-openmp), without touching the
# system alternative.
OPENBLAS_OPENMP = Path('/usr/lib/x86_64-linux-gnu/openblas-openmp')
PYTHON_ENV = {'LD_LIBRARY_PATH': str(OPENBLAS_OPENMP)} if (OPENBLAS_OPENMP / 'libblas.so.3').exists() else {}


def log(*parts):
    print('[bench]', *parts, file=sys.stderr, flush=True)


def build():
    log('building', PROJECT.relative_to(ROOT), '(Release)')
    subprocess.run(['dotnet', 'build', str(PROJECT), '-c', 'Release', '--nologo', '-v', 'q'], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def python_with_torch():
    """The first Python that can import torch: $POLA_BENCH_PYTHON, then /usr/bin/python3 (Debian's python3-torch),
    then python3 on PATH."""
    candidates = [os.environ.get('POLA_BENCH_PYTHON'), '/usr/bin/python3', shutil.which('python3')]
    for c in candidates:
        if c and Path(c).exists() and subprocess.run([c, '-c', 'import torch'], capture_output=True).returncode == 0:
            return c
    raise SystemExit('no Python with torch found: install python3-torch (Debian) or set POLA_BENCH_PYTHON')


# The machine is shared with other engineers' builds and training runs, which kept both cores busy for long
# stretches; a raised scheduling priority for the measured process (both sides alike) keeps their time slices from
# landing inside our timed iterations. Needs root or CAP_SYS_NICE; without it the priority stays as it is.
NICE = int(os.environ.get('POLA_BENCH_NICE', '-10'))


def _limit(cap_bytes):
    def apply():
        if NICE:
            try:
                os.nice(NICE)
            except OSError:
                pass
        if cap_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))
        try:  # if the machine runs out of memory anyway, the kernel kills this benchmark, not a neighbour
            with open('/proc/self/oom_score_adj', 'w') as f:
                f.write('1000')
        except OSError:
            pass
    return apply


def _rss(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _busy_jiffies():
    fields = [int(x) for x in Path('/proc/stat').read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(window=0.5):
    """CPU cores kept busy by the whole machine over the last `window` seconds."""
    b0, t0 = _busy_jiffies()
    time.sleep(window)
    b1, t1 = _busy_jiffies()
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


def wait_for_quiet(threshold=0.4, max_wait=float(os.environ.get('POLA_BENCH_QUIET_WAIT', '20'))):
    """The machine is shared: before each measurement wait (up to max_wait seconds) until other processes keep less
    than `threshold` cores busy. Returns the busy cores seen last, recorded with the measurement."""
    start = time.time()
    busy = busy_cores()
    while busy > threshold and time.time() - start < max_wait:
        busy = busy_cores()
    return round(busy, 2)


def run_json(argv, cap_bytes=None, timeout=900, extra_env=None, rss_limit=None,
             retries=int(os.environ.get('POLA_BENCH_RETRIES', '2')), max_other=0.35):
    """Runs one measurement (see _run_once). The machine is shared: the CPU time other processes used while it ran
    (all busy time minus this child's own user+system time) is recorded as `other_cores_during`; when they kept
    more than `max_other` cores busy on average the measurement is retried (up to `retries` times) and the
    cleanest attempt is kept."""
    best = None
    for attempt in range(retries + 1):
        r = _run_once(argv, cap_bytes, timeout, extra_env, rss_limit)
        r['attempt'] = attempt + 1
        if r.get('failed'):
            return r
        if best is None or r['other_cores_during'] < best['other_cores_during']:
            best = r
        if r['other_cores_during'] <= max_other:
            break
        log(f"  (other processes kept {r['other_cores_during']:.2f} cores busy; retrying)")
    return best


def _run_once(argv, cap_bytes=None, timeout=900, extra_env=None, rss_limit=None):
    """Runs one measurement in a fresh process under an address-space cap; returns its JSON object, or a failure
    record (error text, exit status, wall time) when it died, ran out of memory or timed out. With rss_limit the
    process is killed as soon as its resident memory exceeds it (polled every 20 ms), so attempts that cannot fit
    fail fast."""
    env = dict(os.environ, **(extra_env or {}))
    busy_before = wait_for_quiet()
    started = time.time()
    busy0, total0 = _busy_jiffies()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_limit(cap_bytes))
    killed = None
    if rss_limit:
        while proc.poll() is None:
            rss = _rss(proc.pid)
            if rss > rss_limit:
                proc.kill()
                killed = f'killed: resident memory {rss / GIB:.2f} GiB exceeded {rss_limit / GIB:.2f} GiB'
                break
            if time.time() - started > timeout:
                proc.kill()
                killed = f'timed out after {timeout} s'
                break
            time.sleep(0.02)
    try:
        stdout, stderr = proc.communicate(timeout=None if rss_limit else timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {'failed': True, 'error': f'timed out after {timeout} s', 'wall_s': time.time() - started}
    wall = time.time() - started
    busy1, total1 = _busy_jiffies()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    hz = os.sysconf('SC_CLK_TCK')
    other_cores = max(0.0, ((busy1 - busy0) / hz - own) / max(wall, 1e-3))
    if killed:
        return {'failed': True, 'error': killed, 'wall_s': wall}
    lines = [line for line in stdout.splitlines() if line.startswith('{')]
    if proc.returncode == 0 and lines:
        result = json.loads(lines[-1])
        result['wall_s'] = wall
        result['busy_cores_before'] = busy_before
        result['other_cores_during'] = round(other_cores, 3)
        return result
    err = (stderr or stdout).strip().splitlines()
    message = next((line for line in err if 'alloc' in line.lower() or 'memory' in line.lower()), err[0] if err else '')
    return {'failed': True, 'error': message[:300], 'returncode': proc.returncode, 'wall_s': wall}


def csharp(*args):
    return ['dotnet', str(DLL), *[str(a) for a in args], '--json']


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
        except Exception:  # noqa: BLE001 - a missing tool only leaves a field empty
            return ''
    lscpu = sh('lscpu')
    field = lambda name: next((l.split(':', 1)[1].strip() for l in lscpu.splitlines() if l.startswith(name + ':')), '')
    mem_kib = int(re.search(r'MemTotal:\s+(\d+)', Path('/proc/meminfo').read_text()).group(1))
    try:
        py = python_with_torch()
    except SystemExit:  # the C#-only drivers run without one; the PyTorch fields stay empty
        py = None
    py_info = sh(f'{py} -c "import torch,sys; print(torch.__version__); print(sys.version.split()[0])"').splitlines() if py else []
    blas_cfg = sh(f'{py} -c "import torch; c=torch.__config__.show(); import re; '
                  f'print(re.search(r\'BLAS_INFO=([^,]*)\', c).group(1))"') if py else ''
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'cpu': field('Model name'), 'cpus': os.cpu_count(), 'threads_per_core': field('Thread(s) per core'),
        'flags_avx512': 'avx512f' in lscpu, 'memory_gib': round(mem_kib / (1 << 20), 1),
        'os': sh('. /etc/os-release && echo "$PRETTY_NAME"'), 'kernel': platform.release(),
        'dotnet': sh('dotnet --version'),
        'debian_torch': sh("dpkg-query -W -f='${Version}' python3-torch"),
        'python_torch': py_info[0] if py_info else '', 'python': py_info[1] if len(py_info) > 1 else '',
        'python_blas_info': blas_cfg,
        'system_blas': sh('readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3'),
        'load_average_at_start': sh('cut -d" " -f1-3 /proc/loadavg'),
    }


CLEAN = 0.5  # a process during which other processes kept more than this many cores busy is "contaminated"


def clean(records):
    """The processes of one configuration to aggregate: those no neighbour disturbed (other processes kept at most
    CLEAN cores busy while they ran) when there are any, else all of them."""
    ok = [r for r in records if not r.get('failed')]
    quiet = [r for r in ok if r.get('other_cores_during', 0) <= CLEAN]
    return quiet or ok


def _results_folder():
    """Creates RESULTS with its machine.json (what render.py describes the machine from) on first use."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not (RESULTS / 'machine.json').exists():
        (RESULTS / 'machine.json').write_text(json.dumps(machine(), indent=2) + '\n')


def write_jsonl(name, records):
    _results_folder()
    with open(RESULTS / name, 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')


def append_jsonl(name, record):
    _results_folder()
    with open(RESULTS / name, 'a') as f:
        f.write(json.dumps(record) + '\n')


def read_jsonl(name):
    path = RESULTS / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == '__main__':
    # `python3 benchmarks/scripts/benchlib.py` prints the results folder of this sitting (for the shell scripts).
    print(RESULTS.relative_to(ROOT))
