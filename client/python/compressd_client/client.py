"""Client of compress.v1.CompressionService: jobs, events, artifacts and blobs as plain dicts.

Jobs and events are returned as dicts made by json_format.MessageToDict with proto field names
(the same JSON as `compressctl --output json`: enums as names, int64 fields as strings,
timestamps as RFC 3339 strings, fields at their default value left out). Every failure raises
CompressdError, which carries the canonical gRPC status code name and a message.
"""

import errno
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Mapping

import grpc
from google.protobuf import json_format

from compress.v1 import compression_service_pb2 as pb
from compress.v1 import compression_service_pb2_grpc as pb_grpc
from compress.v1 import job_spec_pb2

FINISHED_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")

_log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20  # per UploadBlob message; compressd accepts 4 MiB messages by default
# What watch and wait retry for up to retry_for, as compressctl watch does
# (client/job_event_follower.cc): a server restarting or a dropped connection (UNAVAILABLE; INTERNAL
# or UNKNOWN for a stream reset mid-flight), a store that is briefly full or busy
# (RESOURCE_EXHAUSTED), and a GetJob that timed out (DEADLINE_EXCEEDED). CANCELLED is retried too
# unless the client was closed (see Client._watch_transient).
_WATCH_TRANSIENT_CODES = frozenset(
    ("UNAVAILABLE", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"))
# How many reads of one artifact compressd may cancel (its file-transfer idle timeout) that each
# start retry_for afresh, as for compressctl download (kMaxServerCancels, client/server_cancels.h).
_MAX_SERVER_CANCELS = 3
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Ping a quiet server every 30 s and drop the connection when it does not answer within
    # 10 s, so that a watch of a server that vanished without closing the connection fails
    # UNAVAILABLE (and is reopened) instead of hanging; compressd accepts pings every 10 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class CompressdError(Exception):
    """A failed call: `code` is the canonical status code name (e.g. "NOT_FOUND"), `message` says
    what failed and why."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class JobFailedError(CompressdError):
    """Raised by Client.wait when the job ended FAILED or CANCELLED. `code` and `message` are the
    job's error_code and error_message (`code` is the state's name when the job has no
    error_code), `state` is "FAILED" or "CANCELLED", `job` the finished job as a dict."""

    def __init__(self, job):
        state = job.get("state", "JOB_STATE_UNSPECIFIED")
        code = job.get("error_code") or state
        message = f"{job.get('name', '')} ended {state}: {job.get('error_message', '')}"
        super().__init__(code, message)
        self.state = state
        self.job = job


def _invalid(field, expected, value):
    return CompressdError("INVALID_ARGUMENT",
                          f"{field}: expected {expected}, got {type(value).__name__} {value!r}")


def _check_str(value, field, optional=False):
    if value is None and optional:
        return value
    if not isinstance(value, str):
        raise _invalid(field, "a str", value)
    return value


def _check_int(value, field, bits=32, optional=False):
    """An int (not a bool) that fits a signed proto field of `bits` bits."""
    if value is None and optional:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, "an int", value)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise CompressdError("INVALID_ARGUMENT",
                             f"{field}: must fit in a signed {bits}-bit integer, got {value}")
    return value


def _check_seconds(value, field, optional=False):
    if value is None and optional:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(field, "a number of seconds", value)
    return value


def _check_labels(labels, field="labels"):
    """A dict of str keys and str values (None: no labels)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise _invalid(field, "a dict of str to str", labels)
    for key, value in labels.items():
        if not isinstance(key, str):
            raise _invalid(f"{field}: key {key!r}", "a str", key)
        if not isinstance(value, str):
            raise _invalid(f"{field}[{key!r}]", "a str", value)
    return dict(labels)


def _check_path(value, field):
    if not isinstance(value, (str, os.PathLike)):
        raise _invalid(field, "a str or os.PathLike path", value)
    return os.fspath(value)


def _quoted(value):
    """`value` as a double-quoted string of the ListJobs filter (\\" and \\\\ escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def job_name(job):
    """"ID" or "jobs/ID" -> "jobs/ID" (what compressctl accepts as JOB)."""
    _check_str(job, "job")
    job_id = job[len("jobs/"):] if job.startswith("jobs/") else job
    if not job_id or "/" in job_id:
        raise CompressdError("INVALID_ARGUMENT", f'job "{job}": expected ID or jobs/ID')
    return "jobs/" + job_id


def artifact_name(job, artifact):
    """The resource name ReadArtifact takes: "jobs/ID/artifacts/NAME"."""
    return f"{job_name(job)}/artifacts/{artifact}"


def _to_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _rpc_error(error, what):
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return CompressdError(code.name, f"{what}: {details}")


def _file_transfers_busy(error):
    """compressd refused a transfer because it is serving its --max_file_streams at once (not the
    other RESOURCE_EXHAUSTED answers: a message or blob over its limit)."""
    return error.code == "RESOURCE_EXHAUSTED" and "--max_file_streams" in error.message


# The canonical code of a local OSError by its errno, as compressctl maps it (absl::ErrnoToStatus).
_ERRNO_CODES = {
    errno.ENOENT: "NOT_FOUND", errno.ENXIO: "NOT_FOUND", errno.ENODEV: "NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED", errno.EPERM: "PERMISSION_DENIED",
    errno.EROFS: "PERMISSION_DENIED",
    errno.EEXIST: "ALREADY_EXISTS",
    errno.ENOTDIR: "FAILED_PRECONDITION", errno.EISDIR: "FAILED_PRECONDITION",
    errno.ENOTEMPTY: "FAILED_PRECONDITION", errno.EBUSY: "FAILED_PRECONDITION",
    errno.ETXTBSY: "FAILED_PRECONDITION",
    errno.ENOSPC: "RESOURCE_EXHAUSTED", errno.EDQUOT: "RESOURCE_EXHAUSTED",
    errno.EMFILE: "RESOURCE_EXHAUSTED", errno.ENFILE: "RESOURCE_EXHAUSTED",
    errno.ENOMEM: "RESOURCE_EXHAUSTED",
    errno.EFBIG: "OUT_OF_RANGE", errno.ENAMETOOLONG: "INVALID_ARGUMENT",
    errno.EINVAL: "INVALID_ARGUMENT",
}


def _os_error(error, what):
    """A CompressdError for a local OSError: the code its errno maps to and the OS's reason."""
    code = _ERRNO_CODES.get(error.errno, "UNKNOWN")
    reason = error.strerror or str(error)
    if error.filename is not None and str(error.filename) not in what:
        reason += f": {error.filename}"
    return CompressdError(code, f"{what}: {reason}")


def _pem(value, what):
    """PEM bytes from bytes, PEM text, or the path of a PEM file; None stays None."""
    if value is None or isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        with open(text, "rb") as f:
            return f.read()
    except OSError as e:
        raise _os_error(e, f"{what}: cannot read {text}") from None


_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_ASCII_SPACE = b" \t\n\v\f\r"


def _clean_token(token):
    """The token without surrounding whitespace (the "\\r\\n" of a file saved on Windows) and a
    leading UTF-8 byte order mark; None when nothing is left. gRPC accepts only printable ASCII
    (0x20-0x7e) in metadata, so any other byte left is INVALID_ARGUMENT with its offset in the
    token as given (UTF-8 encoded when it is a str)."""
    if token is None:
        return None
    if isinstance(token, str):
        raw = token.encode("utf-8", "surrogatepass")
    elif isinstance(token, bytes):
        raw = token
    else:
        raise CompressdError("INVALID_ARGUMENT",
                             f"token: expected a str, got {type(token).__name__}")
    begin, end = 0, len(raw)
    while begin < end and raw[begin] in _ASCII_SPACE:
        begin += 1
    if raw.startswith(_BYTE_ORDER_MARK, begin):
        begin += len(_BYTE_ORDER_MARK)
        while begin < end and raw[begin] in _ASCII_SPACE:
            begin += 1
    while end > begin and raw[end - 1] in _ASCII_SPACE:
        end -= 1
    for offset in range(begin, end):
        if not 0x20 <= raw[offset] <= 0x7E:
            raise CompressdError(
                "INVALID_ARGUMENT",
                f"token: byte 0x{raw[offset]:02x} at offset {offset} is not printable ASCII; a "
                "token may hold only characters 0x20-0x7e")
    return raw[begin:end].decode("ascii") or None


def _load_yaml(text, source):
    """The mapping a YAML spec file holds, read with PyYAML's safe loader."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise CompressdError(
            "FAILED_PRECONDITION",
            f"{source}: a YAML spec needs PyYAML (Debian: python3-yaml; pip: PyYAML), which "
            "this Python cannot import; install it, or give the spec as JSON") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(e, "problem", None) or str(e)
        raise CompressdError("INVALID_ARGUMENT", f"{where}: not YAML: {problem}") from None
    if not isinstance(value, dict):
        raise CompressdError("INVALID_ARGUMENT", f"{source}: expected a mapping of JobSpec "
                             f"fields, got {type(value).__name__}")
    return value


def _load_spec(spec):
    """A JobSpec from a dict, a JSON text, a path (str or os.PathLike) of a JSON file or of a
    YAML file (.yaml, .yml), or a JobSpec message."""
    if isinstance(spec, job_spec_pb2.JobSpec):
        return spec
    source = "spec"
    if isinstance(spec, dict):
        text = None
    elif isinstance(spec, str) and spec.lstrip().startswith("{"):
        text = spec
    elif isinstance(spec, (str, os.PathLike)):
        source = os.fspath(spec)
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise _os_error(e, f"cannot read spec file {source}") from None
        except UnicodeDecodeError as e:
            raise CompressdError(
                "INVALID_ARGUMENT", f"{source}: not UTF-8 text: {e.reason} at byte {e.start}"
            ) from None
        if source.lower().endswith((".yaml", ".yml")):
            spec, text = _load_yaml(text, source), None
    else:
        raise CompressdError("INVALID_ARGUMENT",
                             f"spec: expected a dict, JSON text or path, got {type(spec).__name__}")
    try:
        if text is None:
            return json_format.ParseDict(spec, job_spec_pb2.JobSpec())
        return json_format.Parse(text, job_spec_pb2.JobSpec())
    except json_format.ParseError as e:
        raise CompressdError("INVALID_ARGUMENT",
                             f"{source}: not a compress.v1.JobSpec: {e}") from None


def _part_path(path, sha256):
    """Where a download keeps the bytes of an artifact with `sha256` until they are verified:
    PATH.<the sha256's first 16 hex digits>.part, so that the bytes of another artifact of the
    same name (another job's model.safetensors) are never resumed as this one's; PATH.part when
    the server gave no sha256 of 64 hex digits (the download then fails its check anyway). As
    compressctl's download names it."""
    if re.fullmatch(r"[0-9a-f]{64}", sha256):
        return f"{path}.{sha256[:16]}.part"
    return path + ".part"


def _sha256_file(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK_BYTES)
            if not block:
                break
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class Client:
    """A connection to compressd.

    address: "host:port". token: sent as `authorization: Bearer TOKEN` on every call.
    root_certificates: PEM CAs that verify the server (bytes, PEM text or a file path); given, the
    channel uses TLS. private_key / certificate_chain: the client's key and certificate for mutual
    TLS. server_name: the name the server's certificate must carry when it differs from the
    address's host. tls: TLS with the system's CAs when no root_certificates are given.
    timeout: deadline in seconds of every unary call. retry_for: seconds watch, wait and download
    keep retrying while the server is UNAVAILABLE before they give up, counted from the server's
    last answer (watch and wait also retry the other codes compressctl watch retries; download
    also after compressd cancelled a stalled read, the first three times each with retry_for
    afresh).
    """

    def __init__(self, address, token=None, root_certificates=None, private_key=None,
                 certificate_chain=None, server_name=None, tls=False, timeout=30.0,
                 retry_for=120.0):
        _check_str(address, "address")
        _check_seconds(timeout, "timeout", optional=True)
        _check_seconds(retry_for, "retry_for")
        token = _clean_token(token)
        options = list(_CHANNEL_OPTIONS)
        if root_certificates is not None or tls:
            if (private_key is None) != (certificate_chain is None):
                raise CompressdError("INVALID_ARGUMENT",
                                     "private_key and certificate_chain: give both or neither")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certificates, "root_certificates"),
                private_key=_pem(private_key, "private_key"),
                certificate_chain=_pem(certificate_chain, "certificate_chain"))
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.secure_channel(address, credentials, options)
        else:
            if private_key is not None or certificate_chain is not None or server_name:
                raise CompressdError(
                    "INVALID_ARGUMENT",
                    "private_key, certificate_chain and server_name need TLS (root_certificates)")
            self._channel = grpc.insecure_channel(address, options)
        self._stub = pb_grpc.CompressionServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retry_for = retry_for
        self._closed = False

    def close(self):
        self._closed = True  # before the calls still open end CANCELLED
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Unary calls.

    def _call(self, method, request, what):
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _rpc_error(e, what) from None

    def _job(self, name):
        name = job_name(name)
        return self._call(self._stub.GetJob, pb.GetJobRequest(name=name), f"get {name}")

    def create_job(self, spec, labels=None, request_id=None, priority=0, max_attempts=0):
        """Creates a job from a spec (dict, JSON text, or the path of a JSON file, or of a YAML
        file named .yaml or .yml (needs PyYAML), with the field names of job_spec.proto). A
        repeated request_id returns the first job. Returns the job."""
        labels = _check_labels(labels)
        _check_str(request_id, "request_id", optional=True)
        _check_int(priority, "priority")
        _check_int(max_attempts, "max_attempts")
        request = pb.CreateJobRequest(spec=_load_spec(spec), labels=labels, priority=priority,
                                      request_id=request_id or "", max_attempts=max_attempts)
        return _to_dict(self._call(self._stub.CreateJob, request, "create job"))

    def get_job(self, name):
        """The job "ID" or "jobs/ID"."""
        return _to_dict(self._job(name))

    def list_jobs(self, state=None, labels=None, page_size=100):
        """Yields the jobs in creation order, following every page. state: a state name
        ("RUNNING"); labels: {key: value} the jobs must all carry."""
        _check_str(state, "state", optional=True)
        labels = _check_labels(labels)
        _check_int(page_size, "page_size")
        clauses = [f"state = {state}"] if state else []
        clauses += [f"labels.{key} = {_quoted(value)}" for key, value in sorted(labels.items())]
        request = pb.ListJobsRequest(page_size=page_size, filter=" AND ".join(clauses))
        while True:
            response = self._call(self._stub.ListJobs, request, "list jobs")
            for job in response.jobs:
                yield _to_dict(job)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def cancel_job(self, name):
        """Requests cancellation; returns the job. A finished job is FAILED_PRECONDITION."""
        name = job_name(name)
        return _to_dict(
            self._call(self._stub.CancelJob, pb.CancelJobRequest(name=name), f"cancel {name}"))

    def delete_job(self, name):
        """Deletes a finished job with its events and artifacts."""
        name = job_name(name)
        self._call(self._stub.DeleteJob, pb.DeleteJobRequest(name=name), f"delete {name}")

    def report(self, name):
        """The job's final report (report_json) parsed. A job without one (not SUCCEEDED yet) is
        FAILED_PRECONDITION."""
        job = self._job(name)
        if not job.report_json:
            raise CompressdError(
                "FAILED_PRECONDITION",
                f"{job.name} has no report (state {pb.JobState.Name(job.state)})")
        return json.loads(job.report_json)

    # Streams.

    def _retrying(self, error, started, what, transient=None):
        """Returns the time the current run of transient errors started, after sleeping a
        little, or raises when the error is not transient or retry_for has passed. Transient:
        UNAVAILABLE, or what `transient(error)` accepts when given."""
        if not (error.code == "UNAVAILABLE" or (transient is not None and transient(error))):
            raise error
        now = time.monotonic()
        started = now if started is None else started
        left = started + self._retry_for - now
        if left <= 0:
            raise CompressdError(error.code,
                                 f"{what}: gave up after {self._retry_for:g}s: {error.message}")
        # The wait before the last try is cut short, so that the last try is made at the deadline.
        time.sleep(min(2.0, 0.2 + (now - started) / 4, left))
        return started

    def _call_retrying(self, method, request, what, deadline=None, transient=None):
        """A unary call, tried again while the server is UNAVAILABLE (or the error is one
        `transient(error)` accepts, when given) for up to retry_for, and not past `deadline`, a
        time.monotonic() value, when given: DEADLINE_EXCEEDED."""
        unavailable_since = None
        while True:
            try:
                return self._call(method, request, what)
            except CompressdError as error:
                retried = error.code == "UNAVAILABLE" or (transient is not None and
                                                          transient(error))
                if retried and deadline is not None and time.monotonic() >= deadline:
                    raise CompressdError("DEADLINE_EXCEEDED", f"{what}: timed out") from None
                unavailable_since = self._retrying(error, unavailable_since, what, transient)

    def _watch_transient(self, error):
        """Whether watch and wait retry `error` (_WATCH_TRANSIENT_CODES). CANCELLED is not this
        client's doing unless it was closed (it cancels a stream only after it stopped reading):
        a server that stops cancels the calls still open, like a dropped connection."""
        if error.code == "CANCELLED":
            return not self._closed
        return error.code in _WATCH_TRANSIENT_CODES

    def _watch_events(self, name, after_sequence, deadline=None):
        """Yields the job's JobEvent messages after after_sequence until the job has finished and
        every event was seen. Reopens the stream from the last sequence seen after the errors
        _watch_transient accepts, for up to retry_for from the first error after the server's
        last answer."""
        last = after_sequence
        failing_since = None  # when the current run of errors began; None while none
        get = pb.GetJobRequest(name=name)
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise CompressdError("DEADLINE_EXCEEDED", f"watch {name}: timed out")
            if failing_since is not None:
                # A stream that opens proves nothing until an event comes or it ends, which for
                # a quiet job may take long: after an error, the server must answer a GetJob
                # before the outage counts as over, so that the next one has retry_for again.
                try:
                    self._call(self._stub.GetJob, get, f"get {name}")
                    failing_since = None
                except CompressdError as error:
                    failing_since = self._retrying(error, failing_since, f"watch {name}",
                                                   self._watch_transient)
                    continue
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            stream = self._stub.WatchJob(pb.WatchJobRequest(name=name, after_sequence=last),
                                         timeout=timeout, metadata=self._metadata)
            try:
                for event in stream:
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    yield event
                job = self._call(self._stub.GetJob, get, f"get {name}")
                if (pb.JobState.Name(job.state) in FINISHED_STATES and
                        job.last_event_sequence <= last):
                    return
                time.sleep(0.2)  # the stream ended before the job did: reopen it
            except grpc.RpcError as e:
                error = _rpc_error(e, f"watch {name}")
                if error.code == "DEADLINE_EXCEEDED" and deadline is not None:
                    continue  # the loop's head raises when the overall deadline has passed
                failing_since = self._retrying(error, failing_since, f"watch {name}",
                                               self._watch_transient)
            except CompressdError as error:
                failing_since = self._retrying(error, failing_since, f"watch {name}",
                                               self._watch_transient)
            finally:
                stream.cancel()

    def watch(self, name, after_sequence=0):
        """Yields the job's events (dicts) after after_sequence in sequence order, live until the
        job has finished. A dropped connection is reopened from the last sequence seen."""
        name = job_name(name)
        _check_int(after_sequence, "after_sequence", bits=64)
        for event in self._watch_events(name, after_sequence):
            yield _to_dict(event)

    def wait(self, name, timeout=None):
        """Blocks until the job has finished and returns it. Raises JobFailedError when it ended
        FAILED or CANCELLED, CompressdError DEADLINE_EXCEEDED after timeout seconds."""
        name = job_name(name)
        _check_seconds(timeout, "timeout", optional=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        get = pb.GetJobRequest(name=name)
        job = self._call_retrying(self._stub.GetJob, get, f"get {name}", deadline,
                                  self._watch_transient)
        for _ in self._watch_events(name, job.last_event_sequence, deadline):
            pass
        job = _to_dict(self._call_retrying(self._stub.GetJob, get, f"get {name}",
                                           transient=self._watch_transient))
        if job.get("state") != "SUCCEEDED":
            raise JobFailedError(job)
        return job

    def download(self, name, artifact, path):
        """Downloads an artifact to path (a file, or a directory that gets the artifact's name; a
        path ending in "/" is a directory, created when missing).

        Writes path + "." + the first 16 hex digits of the artifact's sha256 + ".part" first
        and continues an existing partial file from its size; the whole file's sha256 must match
        the artifact's, then the file is renamed to path. Resumed bytes that fail the check (or
        outnumber the artifact's) are dropped once and the artifact read again from the start,
        with a warning logged. A mismatch is DATA_LOSS and keeps the partial file, which the
        next download reads again from the start. A path already holding the artifact is
        left alone; one holding other bytes is DATA_LOSS. A read compressd cancelled (CANCELLED:
        its file-transfer idle timeout) goes on from the bytes written, the first three such
        cancels each with retry_for afresh. Returns {name, path, size_bytes,
        sha256, resumed_from, already_present}. Local I/O errors are CompressdError too, with
        the code their errno maps to (NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...)."""
        _check_str(artifact, "artifact")
        path = _check_path(path, "path")
        try:
            return self._download(name, artifact, path)
        except OSError as e:
            raise _os_error(e, f"download {artifact} to {path}") from None

    def _download(self, name, artifact, path):
        name = job_name(name)
        job = self._call_retrying(self._stub.GetJob, pb.GetJobRequest(name=name), f"get {name}")
        found = [a for a in job.artifacts if a.name == artifact]
        if not found:
            raise CompressdError("NOT_FOUND", f"{name} has no artifact {artifact!r}")
        expected = found[0]
        path = os.fspath(path)
        if path.endswith(("/", os.sep)) or os.path.isdir(path):
            os.makedirs(path, exist_ok=True)  # as compressctl's -o DIR
            path = os.path.join(path, artifact)
        result = {"name": artifact, "path": path, "size_bytes": expected.size_bytes,
                  "sha256": expected.sha256, "resumed_from": 0, "already_present": False}
        if os.path.exists(path):
            sha, size = _sha256_file(path)
            if sha == expected.sha256 and size == expected.size_bytes:
                result["already_present"] = True
                return result
            raise CompressdError("DATA_LOSS", f"{path} exists with other contents (sha256 {sha}); "
                                 f"not overwriting it with {artifact}")
        part = _part_path(path, expected.sha256)
        try:
            part_mode = os.stat(part).st_mode
        except FileNotFoundError:
            part_mode = None
        if part_mode is not None and not stat.S_ISREG(part_mode):
            raise CompressdError("FAILED_PRECONDITION", f"cannot resume {part}: not a regular "
                                 "file, so its size is unknown")
        # Bytes an earlier run left that are not the artifact's (more of them than it has, or a
        # whole that fails the check: a damaged disk, a file copied in) are dropped once and the
        # artifact is read again from the start, so that such a file cannot make every later
        # run fail.
        from_start = False
        if part_mode is not None and os.path.getsize(part) > expected.size_bytes:
            _log.warning("download %s: %s holds %d bytes, more than the artifact's %d; "
                         "downloading it again from the start", artifact, part,
                         os.path.getsize(part), expected.size_bytes)
            from_start = True
        resource = artifact_name(name, artifact)
        result["resumed_from"] = self._fill_part(resource, expected, part, from_start)
        sha, size = _sha256_file(part)
        if (sha != expected.sha256 or size != expected.size_bytes) and result["resumed_from"]:
            _log.warning("download %s: %s (resumed at %d bytes) has sha256 %s, expected %s; "
                         "downloading it again from the start", artifact, part,
                         result["resumed_from"], sha, expected.sha256)
            result["resumed_from"] = self._fill_part(resource, expected, part, True)
            sha, size = _sha256_file(part)
        if sha != expected.sha256 or size != expected.size_bytes:
            raise CompressdError(
                "DATA_LOSS", f"{artifact}: downloaded {size} bytes with sha256 {sha}, expected "
                f"{expected.size_bytes} bytes with sha256 {expected.sha256}; the partial file is "
                f"kept at {part} and the next download reads the artifact again from the start")
        os.replace(part, path)
        return result

    def _fill_part(self, resource, expected, part, from_start):
        """Reads the artifact into `part` from its size (from empty when `from_start`),
        reopening reads that broke off, until it has the artifact's size. Returns the size it
        started at."""
        with open(part, "wb" if from_start else "ab"):
            pass  # created when missing, so that an empty artifact has its file too
        offset = os.path.getsize(part)
        if offset > expected.size_bytes:
            raise CompressdError("DATA_LOSS", f"{part} holds {offset} bytes, more than the "
                                 f"artifact's {expected.size_bytes}")
        resumed_from = offset
        unavailable_since = None
        server_cancels = 0
        while offset < expected.size_bytes:
            stream = self._stub.ReadArtifact(pb.ReadArtifactRequest(name=resource, offset=offset),
                                             metadata=self._metadata)
            progressed = False
            try:
                with open(part, "ab") as out:
                    for chunk in stream:
                        out.write(chunk.data)
                        offset += len(chunk.data)
                        progressed = progressed or bool(chunk.data)
                    out.flush()
                    os.fsync(out.fileno())
                if offset < expected.size_bytes and not progressed:
                    raise CompressdError("DATA_LOSS", f"ReadArtifact {resource} ended at "
                                         f"{offset} of {expected.size_bytes} bytes")
            except grpc.RpcError as e:
                error = _rpc_error(e, f"download {resource}")
                # CANCELLED is compressd's doing unless this client was closed: the client cancels
                # a read only once it stopped reading it (finally, below). compressd cancels a
                # transfer that moved nothing for its --file_stream_idle_timeout (a process
                # stopped, a machine asleep) and the calls still open after its shutdown grace.
                # The read goes on from the bytes written; since it stood still that long, the
                # first few such cancels each start retry_for afresh, as progress does.
                server_cancel = error.code == "CANCELLED" and not self._closed
                afresh = progressed
                if server_cancel and server_cancels < _MAX_SERVER_CANCELS:
                    server_cancels += 1
                    afresh = True
                if afresh:
                    unavailable_since = None
                unavailable_since = self._retrying(
                    error, unavailable_since, f"download {resource}",
                    lambda err: server_cancel or _file_transfers_busy(err))
            finally:
                stream.cancel()
        return resumed_from

    def upload_blob(self, path):
        """Uploads a file (a teacher checkpoint) as a blob and returns its sha256, which a spec
        names as teacher.blob_sha256. The server verifies the sha256 and size sent first."""
        path = _check_path(path, "path")
        try:
            sha, size = _sha256_file(path)
        except OSError as e:
            raise _os_error(e, f"cannot read {path}") from None

        def requests():
            yield pb.UploadBlobRequest(sha256=sha, size_bytes=size)
            with open(path, "rb") as f:
                while True:
                    block = f.read(_CHUNK_BYTES)
                    if not block:
                        return
                    yield pb.UploadBlobRequest(data=block)

        busy_since = None
        while True:
            try:
                blob = self._stub.UploadBlob(requests(), metadata=self._metadata)
                return blob.sha256
            except grpc.RpcError as e:
                error = _rpc_error(e, f"upload {path}")
            # Only a refusal before any byte was taken is retried (the upload starts over).
            if not _file_transfers_busy(error):
                raise error from None
            busy_since = self._retrying(error, busy_since, f"upload {path}", _file_transfers_busy)
