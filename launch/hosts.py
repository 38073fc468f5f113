"""Process-wide settings of a training host, applied before JAX starts.

`reserve_gpu_memory_for_renderers()`: JAX's GPU client takes 75% of each GPU's memory at
start by default, leaving too little for the environments' EGL renderers on the same GPU.
The launcher turns that preallocation off (XLA_PYTHON_CLIENT_PREALLOCATE=false: JAX then
allocates what it uses, as it goes) unless the user set any of JAX's GPU memory variables,
which win. It has no effect on CPU or TPU.
"""
import os

JAX_GPU_MEMORY_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                            "XLA_PYTHON_CLIENT_ALLOCATOR")


def reserve_gpu_memory_for_renderers(environ: dict | None = None) -> dict[str, str]:
    """Sets XLA_PYTHON_CLIENT_PREALLOCATE=false in `environ` (os.environ by default) unless
    one of JAX_GPU_MEMORY_VARIABLES is set; returns what it set. Call before importing jax."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in JAX_GPU_MEMORY_VARIABLES):
        return {}
    environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
