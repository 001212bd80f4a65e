"""compressd_client against an in-process fake CompressionService: argument checks, tokens,
downloads into folders, and retries while the server is not there yet.

    test_client_local.py [unittest args]

Needs grpc, protobuf and the stubs of proto/compress/v1 on PYTHONPATH (target
compress_python_stubs); no compressd.
"""

import errno
import hashlib
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc

from compressd_client import Client, CompressdError, JobFailedError
from compressd_client import client as client_module

pb = client_module.pb
pb_grpc = client_module.pb_grpc
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "client", "examples")


class FakeService(pb_grpc.CompressionServiceServicer):
    """One job, jobs/j1, with canned events and artifacts; records what it was asked."""

    def __init__(self):
        self.lock = threading.Lock()
        self.job = pb.Job(name="jobs/j1", state=pb.SUCCEEDED)
        self.events = []
        self.data = {}
        self.filters = []
        self.creates = []
        self.metadata = []
        self.read_offsets = []
        self.read_cancels_left = 0
        self.read_cancel_after = 0
        self.read_cancel_stall = 0.0
        # While set, GetJob and WatchJob fail UNAVAILABLE, as while compressd restarts.
        self.unavailable = False
        # While set, a WatchJob stream stays open after its events, as compressd's does for a
        # job with nothing new.
        self.hold_watches = False
        # Codes the next WatchJob / GetJob calls fail with, one per call.
        self.watch_failures = []
        self.get_failures = []
        self.watch_calls = 0

    def _fail_if_asked(self, context, failures):
        with self.lock:
            code = failures.pop(0) if failures else None
            if code is None and self.unavailable:
                code = grpc.StatusCode.UNAVAILABLE
        if code is not None:
            context.abort(code, f"{code.name} from the fake")

    def add_artifact(self, name, data):
        self.data[name] = data
        self.job.artifacts.add(name=name, size_bytes=len(data),
                               sha256=hashlib.sha256(data).hexdigest())

    def add_events(self, n):
        for i in range(1, n + 1):
            self.events.append(pb.JobEvent(sequence=i))
        self.job.last_event_sequence = n

    def cancel_reads(self, calls, chunks, stall=0.0):
        """The next `calls` ReadArtifact streams are cancelled by the server, as compressd's idle
        watch cancels a transfer that stood still (the client sees plain CANCELLED): each after
        `chunks` messages and `stall` seconds more."""
        with self.lock:
            self.read_cancels_left = calls
            self.read_cancel_after = chunks
            self.read_cancel_stall = stall

    def _seen(self, context):
        with self.lock:
            self.metadata.append(dict(context.invocation_metadata()))

    def CreateJob(self, request, context):
        self._seen(context)
        with self.lock:
            self.creates.append(request)
        return self.job

    def GetJob(self, request, context):
        self._seen(context)
        self._fail_if_asked(context, self.get_failures)
        if request.name != self.job.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        return self.job

    def ListJobs(self, request, context):
        self._seen(context)
        with self.lock:
            self.filters.append(request.filter)
        return pb.ListJobsResponse(jobs=[self.job])

    def WatchJob(self, request, context):
        self._seen(context)
        with self.lock:
            self.watch_calls += 1
        self._fail_if_asked(context, self.watch_failures)
        for event in self.events:
            if event.sequence > request.after_sequence:
                yield event
        while self.hold_watches and context.is_active():
            time.sleep(0.01)
            self._fail_if_asked(context, [])

    def ReadArtifact(self, request, context):
        self._seen(context)
        name = request.name.rsplit("/", 1)[-1]
        data = self.data[name]
        cancel_after = -1  # messages sent before the server cancels the call; -1: never
        with self.lock:
            self.read_offsets.append(request.offset)
            if self.read_cancels_left > 0:
                self.read_cancels_left -= 1
                cancel_after = self.read_cancel_after
                stall = self.read_cancel_stall
        for sent, offset in enumerate(range(request.offset, len(data) + 1, 1000)):
            if sent == cancel_after:
                time.sleep(stall)
                context.cancel()
                return
            if offset < len(data):
                yield pb.ReadArtifactResponse(offset=offset, data=data[offset:offset + 1000])


def part_path(path, data):
    """Where a download keeps the bytes of an artifact holding `data` until they are verified."""
    return f"{path}.{hashlib.sha256(data).hexdigest()[:16]}.part"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(service, port=0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CompressionServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


class LocalTest(unittest.TestCase):
    def setUp(self):
        self.service = FakeService()
        self.server, port = start_server(self.service)
        self.address = f"127.0.0.1:{port}"
        self.tmp = tempfile.mkdtemp(prefix="compressd-pyclient-local-")

    def tearDown(self):
        self.server.stop(None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assertRaisesCode(self, code, function, *args, **kwargs):
        with self.assertRaises(CompressdError) as raised:
            function(*args, **kwargs)
        self.assertEqual(raised.exception.code, code, str(raised.exception))
        return raised.exception

    def test_a_token_loses_surrounding_whitespace_and_a_byte_order_mark(self):
        for token in ("tok-1\r\n", "\ufefftok-1\r\n", b"\xef\xbb\xbf tok-1\r\n"):
            with Client(self.address, token=token) as client:
                client.get_job("j1")
            self.assertEqual(self.service.metadata[-1]["authorization"], "Bearer tok-1")

    def test_a_token_with_a_byte_grpc_refuses_is_invalid_argument(self):
        error = self.assertRaisesCode("INVALID_ARGUMENT", Client, self.address, token="tok\x07en")
        self.assertIn("token: byte 0x07 at offset 3 is not printable ASCII", error.message)
        error = self.assertRaisesCode("INVALID_ARGUMENT", Client, self.address, token=" t\u00f6k")
        self.assertIn("byte 0xc3 at offset 2", error.message)
        self.assertRaisesCode("INVALID_ARGUMENT", Client, self.address, token=5)


    def test_download_into_a_folder_ending_in_a_slash_creates_it(self):
        self.service.add_artifact("model.bin", os.urandom(2500))
        self.service.add_artifact("empty.txt", b"")
        with Client(self.address) as client:
            for name in ("model.bin", "empty.txt"):
                result = client.download("j1", name, os.path.join(self.tmp, "result") + "/")
                path = os.path.join(self.tmp, "result", name)
                self.assertEqual(result["path"], path)
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), self.service.data[name])
            # A path without the slash names the file; its folder must exist.
            self.assertRaisesCode("NOT_FOUND", client.download, "j1", "model.bin",
                                  os.path.join(self.tmp, "missing", "model.bin"))

    def test_local_errors_carry_the_code_of_their_errno_and_the_reason(self):
        self.service.add_artifact("model.bin", os.urandom(5000))
        with open(os.path.join(self.tmp, "file"), "w") as f:
            f.write("x")
        with Client(self.address) as client:
            error = self.assertRaisesCode("FAILED_PRECONDITION", client.download, "j1",
                                          "model.bin", os.path.join(self.tmp, "file", "out/"))
            self.assertIn(os.strerror(errno.ENOTDIR), error.message)

            part = part_path(os.path.join(self.tmp, "model.bin"), self.service.data["model.bin"])
            os.symlink("/dev/null", part)
            error = self.assertRaisesCode("FAILED_PRECONDITION", client.download, "j1",
                                          "model.bin", self.tmp)
            self.assertIn("not a regular file", error.message)
            os.remove(part)

            # Files of this process may grow to 1000 bytes: the write past that fails (EFBIG).
            old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, old_limit[1]))
            try:
                with self.assertRaises(CompressdError) as raised:
                    client.download("j1", "model.bin", self.tmp)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
                signal.signal(signal.SIGXFSZ, old_handler)
            self.assertEqual(raised.exception.code, "OUT_OF_RANGE", str(raised.exception))
            self.assertIn(os.strerror(errno.EFBIG), raised.exception.message)

    def test_download_does_not_resume_the_partial_file_of_another_artifact_of_the_same_name(self):
        # Another job's model.bin, and a model.bin.part of an earlier client: left alone.
        data, other = b"n" * 3000, b"o" * 3000
        self.service.add_artifact("model.bin", data)
        target = os.path.join(self.tmp, "model.bin")
        for foreign in (part_path(target, other), target + ".part"):
            with open(foreign, "wb") as f:
                f.write(other[:1000])
        with Client(self.address) as client:
            result = client.download("j1", "model.bin", self.tmp)
        self.assertEqual(result["resumed_from"], 0)
        self.assertEqual(self.service.read_offsets, [0])
        with open(target, "rb") as f:
            self.assertEqual(f.read(), data)
        for foreign in (part_path(target, other), target + ".part"):
            with open(foreign, "rb") as f:
                self.assertEqual(f.read(), other[:1000])

    def test_download_starts_again_once_when_the_resumed_partial_file_is_not_the_artifacts(self):
        data = b"d" * 3000
        self.service.add_artifact("model.bin", data)
        target = os.path.join(self.tmp, "model.bin")
        with Client(self.address) as client:
            for kept, offsets, message in (
                    (b"x" * 1500, [1500, 0], "(resumed at 1500 bytes) has sha256"),
                    (b"d" * 4000, [0], "holds 4000 bytes, more than the artifact's 3000")):
                self.service.read_offsets = []
                with open(part_path(target, data), "wb") as f:
                    f.write(kept)
                with self.assertLogs("compressd_client.client", "WARNING") as logs:
                    result = client.download("j1", "model.bin", self.tmp)
                self.assertEqual(self.service.read_offsets, offsets)
                self.assertIn(message, logs.output[0])
                self.assertIn("downloading it again from the start", logs.output[0])
                self.assertEqual(result["resumed_from"], 0)
                with open(target, "rb") as f:
                    self.assertEqual(f.read(), data)
                os.remove(target)

    def test_download_mismatch_is_data_loss_and_the_next_download_starts_again(self):
        self.service.add_artifact("model.bin", b"a" * 2000)
        self.service.data["model.bin"] = b"b" * 2000  # a damaged store
        part = part_path(os.path.join(self.tmp, "model.bin"), b"a" * 2000)
        kept = (f"the partial file is kept at {part} and the next download reads the artifact "
                "again from the start")
        with Client(self.address) as client:
            with self.assertNoLogs("compressd_client.client"):
                error = self.assertRaisesCode("DATA_LOSS", client.download, "j1", "model.bin",
                                              self.tmp)
            self.assertIn(kept, error.message)
            self.assertTrue(os.path.exists(part))
            with self.assertLogs("compressd_client.client", "WARNING") as logs:
                error = self.assertRaisesCode("DATA_LOSS", client.download, "j1", "model.bin",
                                              self.tmp)
            self.assertIn("(resumed at 2000 bytes)", logs.output[0])
            self.assertIn(kept, error.message)
        self.assertEqual(self.service.read_offsets, [0, 0])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "model.bin")))

    def test_download_reads_on_after_the_server_cancelled_its_read(self):
        data = bytes(i * 7 % 251 for i in range(5000))
        self.service.add_artifact("model.bin", data)
        self.service.cancel_reads(2, chunks=2)
        with Client(self.address) as client:
            result = client.download("j1", "model.bin", self.tmp)
        self.assertEqual(self.service.read_offsets, [0, 2000, 4000])
        with open(result["path"], "rb") as f:
            self.assertEqual(f.read(), data)

        # Reads cancelled before they brought anything, each after standing still for longer
        # than half of retry_for: each of the first three cancels starts retry_for afresh.
        os.remove(result["path"])
        self.service.read_offsets = []
        self.service.cancel_reads(3, chunks=0, stall=0.8)
        with Client(self.address, retry_for=1) as client:
            result = client.download("j1", "model.bin", self.tmp)
        self.assertEqual(self.service.read_offsets, [0, 0, 0, 0])
        with open(result["path"], "rb") as f:
            self.assertEqual(f.read(), data)

    def test_download_gives_up_on_a_server_that_keeps_cancelling_its_reads(self):
        self.service.add_artifact("model.bin", b"x" * 5000)
        self.service.cancel_reads(1000, chunks=0)
        with Client(self.address, retry_for=0.5) as client:
            started = time.monotonic()
            error = self.assertRaisesCode("CANCELLED", client.download, "j1", "model.bin",
                                          self.tmp)
        self.assertIn("gave up after 0.5s", error.message)
        self.assertLess(time.monotonic() - started, 10)
        # The first three cancels started retry_for afresh, later ones did not.
        self.assertGreater(len(self.service.read_offsets), 4)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "model.bin")))

    def test_watch_of_a_quiet_job_outlasts_a_second_outage_shorter_than_retry_for(self):
        # retry_for counts from the first error after the server's last answer: an outage, then
        # a quiet stretch longer than retry_for without events, then another outage.
        self.service.job.state = pb.RUNNING
        self.service.add_events(2)
        self.service.hold_watches = True

        def outages():
            for start, length in ((0.5, 0.5), (3.0, 0.5)):
                time.sleep(start)
                self.service.unavailable = True
                time.sleep(length)
                self.service.unavailable = False
            self.service.job.state = pb.SUCCEEDED
            self.service.hold_watches = False

        outage = threading.Thread(target=outages)
        outage.start()
        self.addCleanup(outage.join)
        with Client(self.address, retry_for=1.5) as client:
            events = [event["sequence"] for event in client.watch("j1")]
        self.assertEqual(events, ["1", "2"])

    def test_watch_and_wait_retry_the_codes_compressctl_watch_retries(self):
        self.service.add_events(3)
        codes = [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
                 grpc.StatusCode.UNAVAILABLE]
        self.service.watch_failures = list(codes)
        with Client(self.address, retry_for=5) as client:
            events = [event["sequence"] for event in client.watch("j1")]
            self.assertEqual(events, ["1", "2", "3"])
            self.assertEqual(self.service.watch_calls, len(codes) + 1)

            self.service.get_failures = [grpc.StatusCode.DEADLINE_EXCEEDED,
                                         grpc.StatusCode.INTERNAL]
            self.service.watch_failures = [grpc.StatusCode.UNKNOWN]
            self.assertEqual(client.wait("j1")["state"], "SUCCEEDED")

            # Others end the watch at once.
            self.service.watch_failures = [grpc.StatusCode.PERMISSION_DENIED]
            self.assertRaisesCode("PERMISSION_DENIED", lambda: list(client.watch("j1")))

    def test_arguments_of_the_wrong_type_are_invalid_argument_naming_the_field(self):
        spec = {"dataset": {"format": "synthetic"}}
        with Client(self.address) as client:
            for call, field in [
                    (lambda: client.create_job(spec, labels={"team": 5}), "labels['team']"),
                    (lambda: client.create_job(spec, labels={5: "a"}), "labels: key 5"),
                    (lambda: client.create_job(spec, labels=["team"]), "labels"),
                    (lambda: client.create_job(spec, priority="5"), "priority"),
                    (lambda: client.create_job(spec, priority=True), "priority"),
                    (lambda: client.create_job(spec, priority=1 << 40), "priority"),
                    (lambda: client.create_job(spec, max_attempts=1.5), "max_attempts"),
                    (lambda: client.create_job(spec, request_id=7), "request_id"),
                    (lambda: list(client.list_jobs(labels={"team": None})), "labels['team']"),
                    (lambda: list(client.list_jobs(page_size="10")), "page_size"),
                    (lambda: list(client.list_jobs(state=3)), "state"),
                    (lambda: client.get_job(5), "job"),
                    (lambda: list(client.watch("j1", after_sequence="2")), "after_sequence"),
                    (lambda: client.wait("j1", timeout="60"), "timeout"),
                    (lambda: client.download("j1", None, self.tmp), "artifact"),
                    (lambda: client.download("j1", "model.bin", 5), "path"),
                    (lambda: client.upload_blob(None), "path")]:
                error = self.assertRaisesCode("INVALID_ARGUMENT", call)
                self.assertTrue(error.message.startswith(field + ":"), error.message)
        self.assertEqual(self.service.creates, [])
        self.assertRaisesCode("INVALID_ARGUMENT", Client, self.address, timeout="30")

    def test_a_spec_file_that_cannot_be_read_says_why(self):
        with Client(self.address) as client:
            error = self.assertRaisesCode("FAILED_PRECONDITION", client.create_job, self.tmp)
            self.assertEqual(error.message, f"cannot read spec file {self.tmp}: Is a directory")
            missing = os.path.join(self.tmp, "missing.json")
            error = self.assertRaisesCode("NOT_FOUND", client.create_job, missing)
            self.assertEqual(error.message,
                             f"cannot read spec file {missing}: No such file or directory")
            latin1 = os.path.join(self.tmp, "latin1.json")
            with open(latin1, "wb") as f:
                f.write(b'{"labels": "\xe9"}')
            error = self.assertRaisesCode("INVALID_ARGUMENT", client.create_job, latin1)
            self.assertIn("not UTF-8 text", error.message)
        self.assertEqual(self.service.creates, [])

    def test_a_yaml_spec_file_gives_the_job_its_json_twin_gives(self):
        with Client(self.address) as client:
            client.create_job(os.path.join(EXAMPLES, "default-job.json"))
            client.create_job(os.path.join(EXAMPLES, "default-job.yaml"))
            self.assertEqual(self.service.creates[1].spec, self.service.creates[0].spec)
            self.assertEqual(self.service.creates[1].spec.dataset.format, "fashion_mnist")

            broken = os.path.join(self.tmp, "job.yml")
            with open(broken, "w") as f:
                f.write("dataset:\n  format: [synthetic\n")
            error = self.assertRaisesCode("INVALID_ARGUMENT", client.create_job, broken)
            self.assertRegex(error.message, rf"^{broken}:\d+:\d+: not YAML: ")
            with open(broken, "w") as f:
                f.write("- dataset\n")
            error = self.assertRaisesCode("INVALID_ARGUMENT", client.create_job, broken)
            self.assertEqual(error.message, f"{broken}: expected a mapping of JobSpec fields, "
                             "got list")
            with open(broken, "w") as f:
                f.write("dataset: {formats: synthetic}\n")
            error = self.assertRaisesCode("INVALID_ARGUMENT", client.create_job, broken)
            self.assertIn("formats", error.message)
        self.assertEqual(len(self.service.creates), 2)

    def test_a_yaml_spec_without_pyyaml_says_what_it_needs(self):
        saved = sys.modules.get("yaml")
        sys.modules["yaml"] = None  # import yaml raises ImportError
        try:
            with Client(self.address) as client:
                spec = os.path.join(EXAMPLES, "default-job.yaml")
                error = self.assertRaisesCode("FAILED_PRECONDITION", client.create_job, spec)
        finally:
            if saved is None:
                del sys.modules["yaml"]
            else:
                sys.modules["yaml"] = saved
        self.assertEqual(error.message, f"{spec}: a YAML spec needs PyYAML (Debian: python3-yaml; "
                         "pip: PyYAML), which this Python cannot import; install it, or give the "
                         "spec as JSON")
        self.assertEqual(self.service.creates, [])

    def test_list_jobs_escapes_quotes_and_backslashes_in_label_values(self):
        with Client(self.address) as client:
            list(client.list_jobs(state="RUNNING", labels={"team": 'a"b\\c', "x": "y"}))
        self.assertEqual(self.service.filters,
                         ['state = RUNNING AND labels.team = "a\\"b\\\\c" AND labels.x = "y"'])


class NotUpYetTest(unittest.TestCase):
    """A server that starts a second after the call, or never: wait and download retry
    UNAVAILABLE for retry_for, and give up only when it has passed."""

    def setUp(self):
        self.service = FakeService()
        self.service.add_events(3)
        self.service.add_artifact("model.bin", os.urandom(2500))
        self.port = free_port()
        self.server = None
        self.tmp = tempfile.mkdtemp(prefix="compressd-pyclient-local-")

    def tearDown(self):
        if self.server is not None:
            self.server.stop(None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_later(self, seconds=1.0):
        def start():
            time.sleep(seconds)
            self.server, _ = start_server(self.service, self.port)

        starter = threading.Thread(target=start)
        starter.start()
        self.addCleanup(starter.join)

    def test_wait_waits_for_the_server(self):
        self.start_later()
        with Client(f"127.0.0.1:{self.port}", retry_for=20) as client:
            self.assertEqual(client.wait("j1")["state"], "SUCCEEDED")

    def test_download_waits_for_the_server(self):
        self.start_later()
        with Client(f"127.0.0.1:{self.port}", retry_for=20) as client:
            result = client.download("j1", "model.bin", self.tmp)
        with open(result["path"], "rb") as f:
            self.assertEqual(f.read(), self.service.data["model.bin"])

    def test_wait_and_download_give_up_when_retry_for_has_passed(self):
        with Client(f"127.0.0.1:{self.port}", retry_for=1.5) as client:
            for call in (lambda: client.wait("j1"),
                         lambda: client.download("j1", "model.bin", self.tmp)):
                started = time.monotonic()
                with self.assertRaises(CompressdError) as raised:
                    call()
                self.assertEqual(raised.exception.code, "UNAVAILABLE")
                self.assertIn("gave up after 1.5s", raised.exception.message)
                self.assertGreaterEqual(time.monotonic() - started, 1.5)
                self.assertLess(time.monotonic() - started, 5)


if __name__ == "__main__":
    unittest.main()
