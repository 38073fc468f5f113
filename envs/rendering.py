"""Headless OpenGL backend selection for MuJoCo rendering.

dm_control reads MUJOCO_GL once, when it is first imported, so the backend has to be
chosen before that import. `ensure_gl_backend` probes candidates in a subprocess (a
failed GL initialisation can leave a process unable to try another) and records the
first that works in os.environ, which also makes later calls free.
"""
import os
import platform
import subprocess
import sys

# MUJOCO_GL values with which dm_control and mujoco render nothing.
DISABLED_VALUES = ("off", "disable", "disabled", "false", "0")
# Backends that PyOpenGL must be told about through PYOPENGL_PLATFORM.
_PYOPENGL_PLATFORMS = ("egl", "osmesa")
_PROBE_TIMEOUT_S = 60.0
_PROBE_CODE = (
    "import mujoco\n"
    "context = mujoco.GLContext(8, 8)\n"
    "context.make_current()\n"
    "context.free()\n"
)
_HOW_TO_FIX = (
    "Pixel observations need an OpenGL backend for headless MuJoCo rendering. Install one:\n"
    "  EGL (GPU driver, or Mesa on CPU-only machines): apt-get install libegl1 libgl1\n"
    "  OSMesa (software rendering): apt-get install libosmesa6\n"
    "or set MUJOCO_GL yourself (egl, osmesa or glfw) before starting Python. "
    "State observations (obs_type='state') need no rendering."
)


class RenderingUnavailableError(RuntimeError):
    """No OpenGL backend can render MuJoCo scenes in this process."""


def candidate_backends() -> tuple[str, ...]:
    """Backends to probe, in order: EGL then OSMesa on Linux, GLFW elsewhere.

    A PYOPENGL_PLATFORM set by the user moves that backend to the front.
    """
    if platform.system() != "Linux":
        return ("glfw",)
    preferred = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    backends = ("egl", "osmesa")
    if preferred in backends:
        return (preferred,) + tuple(b for b in backends if b != preferred)
    return backends


def _probe(backend: str) -> str | None:
    """Makes an 8x8 GL context with `backend` in a fresh Python process.

    Returns None if that works, else a one-line reason (the last line of its stderr).
    """
    probe_env = dict(os.environ, MUJOCO_GL=backend)
    if backend in _PYOPENGL_PLATFORMS:
        probe_env["PYOPENGL_PLATFORM"] = backend
    else:
        probe_env.pop("PYOPENGL_PLATFORM", None)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE], env=probe_env, capture_output=True,
            text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {_PROBE_TIMEOUT_S:.0f} s"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def ensure_gl_backend() -> str:
    """Chooses the MuJoCo GL backend and returns its name (e.g. 'egl').

    A MUJOCO_GL set by the user is respected as is. Otherwise EGL, then OSMesa, is
    probed, and the first that works is written to os.environ (MUJOCO_GL and
    PYOPENGL_PLATFORM). Call this before dm_control is first imported.

    Raises:
      RenderingUnavailableError: MUJOCO_GL turns rendering off, or no backend works;
        the message says what to install.
    """
    requested = os.environ.get("MUJOCO_GL")
    if requested is not None:
        if requested.strip().lower() in DISABLED_VALUES:
            raise RenderingUnavailableError(
                f"MUJOCO_GL={requested!r} turns rendering off.\n{_HOW_TO_FIX}")
        return requested
    failures = []
    for backend in candidate_backends():
        reason = _probe(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            if backend in _PYOPENGL_PLATFORMS:
                os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
        failures.append(f"{backend}: {reason}")
    raise RenderingUnavailableError(
        f"No OpenGL backend works here ({'; '.join(failures)}).\n{_HOW_TO_FIX}")


def worker_render_env(index: int, num_gpus: int,
                      environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for environment worker `index` on a host with `num_gpus` GPUs
    visible to JAX: workers take the GPUs in turn for EGL rendering
    (MUJOCO_EGL_DEVICE_ID = the index-th visible GPU, round robin). The visible GPUs are
    CUDA_VISIBLE_DEVICES's ids when it lists integers, else 0..num_gpus-1. A
    MUJOCO_EGL_DEVICE_ID the user set wins (nothing is returned), and so does a GL
    backend other than EGL. No GPU: nothing."""
    environ = os.environ if environ is None else environ
    if num_gpus < 1 or "MUJOCO_EGL_DEVICE_ID" in environ:
        return {}
    if environ.get("MUJOCO_GL", "egl") != "egl":
        return {}
    visible = [part.strip() for part in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if part.strip()]
    gpus = ([int(part) for part in visible] if visible and all(p.isdigit() for p in visible)
            else list(range(num_gpus)))
    return {"MUJOCO_EGL_DEVICE_ID": str(gpus[index % len(gpus)])}
