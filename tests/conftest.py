"""Suite-wide setup, before anything imports jax: two CPU devices, and one JAX persistent
compilation cache for the whole test session.

Two devices: XLA_FLAGS=--xla_force_host_platform_device_count=2 gives this process and the
`launch.train` subprocesses it starts (they inherit the environment) two CPU devices, so the
data-parallel learner is exercised on every launch; jit without shardings still runs on one.

The cache: most of the suite's time on a 2-core CPU is XLA compiling the same small programs
again (every `agents.make` builds fresh functions, every subprocess starts cold, and eager
`agent.init` compiles each op for each new shape). A cache directory shared with the
subprocesses compiles each program once per session. It starts empty, so no test depends on
an earlier session, and is removed at exit. Set JAX_COMPILATION_CACHE_DIR to keep one.
"""
import atexit
import os
import shutil
import tempfile

NUM_TEST_DEVICES = 2

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={NUM_TEST_DEVICES}").strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="pixelzoo-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
