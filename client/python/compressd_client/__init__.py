"""Python client of compressd (compress.v1.CompressionService). See docs/python-client.md."""

from compressd_client.client import Client, CompressdError, JobFailedError, artifact_name, job_name

__all__ = ["Client", "CompressdError", "JobFailedError", "artifact_name", "job_name"]
