"""Python client of compressd (compress.v1.CompressionService). See docs/python-client.md."""

from compressd_client.client import Client, CompressdError, JobFailedError, artifact_name, job_name

__all__ = ["Client", "CompressdError", "JobFailedError", "artifact_name", "job_name"]

try:  # The PyTorch loader is optional: it needs torch, the client does not.
    import torch as _torch  # noqa: F401
except ImportError:
    pass
else:
    from compressd_client.torch_loader import load_compressed_model
    __all__.append("load_compressed_model")
