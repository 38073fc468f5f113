"""Suite-wide setup, before anything imports jax: two CPU devices, one JAX persistent
compilation cache for the whole test session, and a faster-compiling XLA backend level.

Two devices: XLA_FLAGS=--xla_force_host_platform_device_count=2 gives this process two CPU
devices, so the data-parallel learner (and every in-process training run) is exercised on
a mesh; jit without shardings still runs on one. Subprocesses keep one device.

The cache: most of the suite's time on a 2-core CPU is XLA compiling the same small programs
again (every `agents.make` builds fresh functions, every subprocess starts cold, and eager
`agent.init` compiles each op for each new shape). A cache directory shared with the
subprocesses compiles each program once per session. It starts empty, so no test depends on
an earlier session, and is removed at exit. Set JAX_COMPILATION_CACHE_DIR to keep one. Under
pytest-xdist (`-n 2`, the README's command) this file is imported by the controlling
process first, so its workers share the one cache.

Compile speed: XLA_FLAGS (this process and its subprocesses) =
  --xla_backend_optimization_level=1: fewer of LLVM's optimisation passes over XLA's
    generated CPU loops. A tiny agent's init and update compile in 19 s instead of 27 s and
    the tests' training runs are no slower (level 0 ran the full-combination run 2.3x
    slower);
  --xla_cpu_use_fusion_emitters=false: XLA's older emitters for fused loops, which compile
    a tiny drqv2 update in 2.5 s instead of 5.0 s and its init in 4.6 s instead of 7.5 s
    (the full-combination test: 45 s instead of 60 s).
The operations and their order are XLA's own either way (no fast-math). Set XLA_FLAGS
yourself to test another setting.
"""
import atexit
import os
import shutil
import tempfile

NUM_TEST_DEVICES = 2

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="pixelzoo-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

_base_xla_flags = os.environ.get("XLA_FLAGS")
if _base_xla_flags is None:
    _base_xla_flags = os.environ["XLA_FLAGS"] = ("--xla_backend_optimization_level=1 "
                                                 "--xla_cpu_use_fusion_emitters=false")
if "xla_force_host_platform_device_count" not in _base_xla_flags:
    os.environ["XLA_FLAGS"] = (_base_xla_flags + " --xla_force_host_platform_"
                               f"device_count={NUM_TEST_DEVICES}").strip()
    import jax  # noqa: E402 - XLA reads the flag when the backend starts, here
    assert jax.device_count() == NUM_TEST_DEVICES
    # Subprocesses (launch.train, the sweep's runs) get one device again: two devices
    # there would only add compile time; the sharded learner is tested in this process.
    os.environ["XLA_FLAGS"] = _base_xla_flags


def pytest_configure(config):
    # pytest-xdist hands each worker a first block of N / 8 consecutive tests; sorted longest
    # first, that gave one worker every slow test (measured: one busy for 613 s, the other
    # done after 346 s). One test at a time keeps both busy to the end.
    if getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1
    config.addinivalue_line(
        "markers", "slow(seconds): about how long the test takes under the README's command; "
        "slow tests run first, longest first")


def pytest_collection_modifyitems(config, items):
    """Longest first: pytest-xdist hands tests out in this order, so the two workers end
    together instead of one running the last long test alone."""
    def seconds(item):
        marker = item.get_closest_marker("slow")
        return marker.args[0] if marker else 0
    items.sort(key=seconds, reverse=True)   # stable: file order among equals
