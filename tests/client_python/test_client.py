"""compressd_client against a live compressd with one local worker running compress-run.

    test_client.py --compressd=PATH --worker=PATH --executor=PATH [--compressctl=PATH]
                   [unittest args]

compressd listens on a free loopback port with bearer tokens (a submitter and a viewer of tenant
"ml", a worker token for its local worker) and a temporary data dir, and serves two file
transfers at a time (--max_file_streams=2).
"""

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

from compressd_client import Client, CompressdError, JobFailedError
from compressd_client import client as client_module
from compressd_process import wait_until_listening

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC_PATH = os.path.join(REPO, "client", "examples", "tiny-synthetic-job.json")
SUBMITTER_TOKEN = "submitter-" + "a" * 32
VIEWER_TOKEN = "viewer-" + "b" * 32
WORKER_TOKEN = "worker-" + "c" * 32

ARGS = None  # the binaries, from the command line


class Server:
    """compressd with `local_workers` local workers; restart() stops it and starts it again on
    the same port and data dir, stop() ends it and removes its files."""

    def __init__(self, binaries, local_workers=1):
        self.binaries = binaries
        self.local_workers = local_workers
        self.dir = tempfile.mkdtemp(prefix="compressd-pyclient-")
        self.tokens = os.path.join(self.dir, "tokens")
        with open(self.tokens, "w") as f:
            f.write(f"{SUBMITTER_TOKEN} ml submitter\n{VIEWER_TOKEN} ml viewer\n"
                    f"{WORKER_TOKEN} ops worker\n")
        self.worker_token = os.path.join(self.dir, "worker-token")
        with open(self.worker_token, "w") as f:
            f.write(WORKER_TOKEN + "\n")
        self.stderr = open(os.path.join(self.dir, "compressd.log"), "ab")
        self.process = None
        self.address = None
        self._start("127.0.0.1:0")

    def _start(self, grpc_address):
        self.process = subprocess.Popen(
            [self.binaries.compressd, f"--grpc_address={grpc_address}", "--metrics_address=",
             f"--token_file={self.tokens}", f"--data_dir={os.path.join(self.dir, 'data')}",
             f"--local_workers={self.local_workers}", f"--worker_binary={self.binaries.worker}",
             f"--local_worker_flags=--executor={self.binaries.executor},--devices=cpu,"
             f"--kill_grace=5s,--lease_wait_seconds=5,--token_file={self.worker_token}",
             "--lease_seconds=10", "--max_file_streams=2"],
            stdout=subprocess.PIPE, stderr=self.stderr, start_new_session=True)
        self.address, self.reader = wait_until_listening(self.process)
        if self.address is None:
            self.stop()
            raise RuntimeError(f"compressd did not start; log:\n{self.log()}")

    def log(self):
        with open(os.path.join(self.dir, "compressd.log"), errors="replace") as f:
            return f.read()[-4000:]

    def _end_process(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.reader.join(10)  # compressd's children may hold stdout open a little longer
            if not self.reader.is_alive():
                self.process.stdout.close()

    def restart(self):
        self._end_process()
        self._start(self.address)

    def stop(self):
        self._end_process()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server(ARGS)


def tearDownModule():
    if SERVER is not None:
        if os.environ.get("COMPRESSD_TEST_SHOW_LOG"):
            sys.stderr.write(SERVER.log())
        SERVER.stop()


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ClientTest(unittest.TestCase):
    """One tiny synthetic job, created in setUpClass, followed to its end by the tests."""

    @classmethod
    def setUpClass(cls):
        cls.client = Client(SERVER.address, token=SUBMITTER_TOKEN, timeout=20, retry_for=30)
        cls.run_id = f"run{os.getpid()}"
        cls.request_id = f"pyclient-{cls.run_id}"
        cls.job = cls.client.create_job(SPEC_PATH, labels={"suite": cls.run_id, "case": "tiny"},
                                        request_id=cls.request_id, priority=1)
        cls.events = list(cls.client.watch(cls.job["name"]))
        cls.finished = cls.client.wait(cls.job["name"], timeout=300)
        cls.tmp = tempfile.mkdtemp(prefix="compressd-pyclient-dl-")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_create_with_the_same_request_id_returns_the_first_job(self):
        with open(SPEC_PATH) as f:
            spec = json.load(f)
        again = self.client.create_job(spec, labels={"other": "x"}, request_id=self.request_id)
        self.assertEqual(again["name"], self.job["name"])
        self.assertEqual(again["request_id"], self.request_id)
        self.assertEqual(again["labels"], {"suite": self.run_id, "case": "tiny"})
        self.assertTrue(re.fullmatch(r"jobs/[^/]+", self.job["name"]), self.job["name"])
        self.assertEqual(self.job["priority"], 1)

    def test_watch_yields_every_event_in_order_until_the_job_ends(self):
        sequences = [int(event["sequence"]) for event in self.events]
        self.assertEqual(sequences, list(range(1, len(sequences) + 1)))
        self.assertEqual(len(sequences), int(self.finished["last_event_sequence"]))
        states = [e["state_change"]["state"] for e in self.events if "state_change" in e]
        self.assertEqual(states[-1], "SUCCEEDED")
        self.assertIn("RUNNING", states)
        self.assertTrue(any("metric" in e for e in self.events))
        artifacts = {e["artifact"]["name"] for e in self.events if "artifact" in e}
        self.assertEqual(artifacts, {a["name"] for a in self.finished["artifacts"]})

    def test_watch_from_a_sequence_yields_only_later_events(self):
        after = len(self.events) // 2
        tail = list(self.client.watch(self.job["name"].split("/", 1)[1], after_sequence=after))
        self.assertEqual(tail, self.events[after:])

    def test_wait_returns_the_succeeded_job(self):
        self.assertEqual(self.finished["state"], "SUCCEEDED")
        self.assertEqual(self.finished["name"], self.job["name"])
        self.assertEqual(self.client.get_job(self.job["name"]), self.finished)

    def test_download_every_artifact_checks_its_sha256(self):
        artifacts = self.finished["artifacts"]
        names = {a["name"] for a in artifacts}
        self.assertIn("report.json", names)
        out = os.path.join(self.tmp, "all")
        os.makedirs(out)
        for artifact in artifacts:
            result = self.client.download(self.job["name"], artifact["name"], out)
            path = os.path.join(out, artifact["name"])
            self.assertEqual(result["path"], path)
            self.assertFalse(result["already_present"])
            self.assertEqual(sha256_of(path), artifact["sha256"])
            self.assertEqual(os.path.getsize(path), int(artifact["size_bytes"]))
            self.assertFalse(os.path.exists(f"{path}.{artifact['sha256'][:16]}.part"))
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report, self.client.report(self.job["name"]))
        again = self.client.download(self.job["name"], "report.json", out)
        self.assertTrue(again["already_present"])
        with self.assertRaises(CompressdError) as raised:
            self.client.download(self.job["name"], "report.json",
                                 os.path.join(self.tmp, "no-such-dir", "report.json"))
        self.assertEqual(raised.exception.code, "NOT_FOUND")
        with self.assertRaises(CompressdError) as raised:
            self.client.download(self.job["name"], "no-such-artifact", out)
        self.assertEqual(raised.exception.code, "NOT_FOUND")

    def test_download_resumes_a_partial_file_and_starts_a_corrupt_one_again(self):
        artifact = max(self.finished["artifacts"], key=lambda a: int(a["size_bytes"]))
        size = int(artifact["size_bytes"])
        self.assertGreater(size, 10)
        reference = os.path.join(self.tmp, "reference")
        os.makedirs(reference)
        self.client.download(self.job["name"], artifact["name"], reference)
        with open(os.path.join(reference, artifact["name"]), "rb") as f:
            data = f.read()

        target = os.path.join(self.tmp, "resumed.bin")
        with open(f"{target}.{artifact['sha256'][:16]}.part", "wb") as f:
            f.write(data[:size // 2])
        result = self.client.download(self.job["name"], artifact["name"], target)
        self.assertEqual(result["resumed_from"], size // 2)
        self.assertEqual(sha256_of(target), artifact["sha256"])

        # Resumed bytes that fail the check are dropped once and the artifact read again.
        corrupt = os.path.join(self.tmp, "corrupt.bin")
        with open(f"{corrupt}.{artifact['sha256'][:16]}.part", "wb") as f:
            f.write(bytes(b ^ 0xFF for b in data[:size // 2]))
        with self.assertLogs("compressd_client.client", "WARNING") as logs:
            result = self.client.download(self.job["name"], artifact["name"], corrupt)
        self.assertIn("downloading it again from the start", logs.output[0])
        self.assertEqual(result["resumed_from"], 0)
        self.assertEqual(sha256_of(corrupt), artifact["sha256"])

    def test_download_and_upload_wait_for_a_free_file_transfer(self):
        """Two uploads that stay open hold both of compressd's file transfers: a download and a
        blob upload are refused RESOURCE_EXHAUSTED, retry, and complete once the uploads end."""
        pb = client_module.pb
        release = threading.Event()

        def held_upload():
            yield pb.UploadBlobRequest(size_bytes=10)
            release.wait(60)

        stub = self.client._stub
        metadata = self.client._metadata
        uploads = [stub.UploadBlob.future(held_upload(), metadata=metadata) for _ in range(2)]
        artifact = self.finished["artifacts"][0]
        resource = f"{self.job['name']}/artifacts/{artifact['name']}"
        try:
            give_up = time.monotonic() + 20
            while True:
                try:
                    for _ in stub.ReadArtifact(pb.ReadArtifactRequest(name=resource),
                                               metadata=metadata, timeout=10):
                        pass
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        self.assertIn("--max_file_streams", e.details())
                        break
                self.assertLess(time.monotonic(), give_up, "the uploads never held both slots")
                time.sleep(0.05)

            blob_path = os.path.join(self.tmp, "waited-blob.bin")
            blob_data = os.urandom(100_000)
            with open(blob_path, "wb") as f:
                f.write(blob_data)
            results, failures = {}, []

            def download():
                try:
                    results["download"] = self.client.download(
                        self.job["name"], artifact["name"], os.path.join(self.tmp, "waited.bin"))
                except CompressdError as e:
                    failures.append(e)

            def upload():
                try:
                    results["upload"] = self.client.upload_blob(blob_path)
                except CompressdError as e:
                    failures.append(e)

            waiting = [threading.Thread(target=download), threading.Thread(target=upload)]
            for thread in waiting:
                thread.start()
            time.sleep(1.5)
            self.assertTrue(all(t.is_alive() for t in waiting),
                            f"a transfer ended while refused: {failures}")
        finally:
            release.set()
            for upload in uploads:
                try:
                    upload.result(timeout=30)
                except grpc.RpcError:
                    pass  # the held uploads send no data: their blob is refused
        for thread in waiting:
            thread.join(60)
            self.assertFalse(thread.is_alive())
        self.assertEqual(failures, [])
        self.assertEqual(sha256_of(os.path.join(self.tmp, "waited.bin")), artifact["sha256"])
        self.assertEqual(results["upload"], hashlib.sha256(blob_data).hexdigest())

    def test_list_jobs_finds_the_job_by_label(self):
        found = list(self.client.list_jobs(labels={"suite": self.run_id}, page_size=1))
        self.assertEqual([job["name"] for job in found], [self.job["name"]])
        succeeded = list(self.client.list_jobs(state="SUCCEEDED", labels={"case": "tiny"}))
        self.assertIn(self.job["name"], [job["name"] for job in succeeded])
        self.assertEqual(list(self.client.list_jobs(labels={"suite": "no-such-run"})), [])

    def complete(self, line):
        """The bash completion (client/completion/compressctl.bash) at the end of line."""
        if not ARGS.compressctl:
            self.skipTest("no --compressctl given")
        script = (f'source "{REPO}/client/completion/compressctl.bash"\n'
                  f'source "{REPO}/tests/client_python/completion_line.sh"\n'
                  'set_line "$LINE"; _compressctl; printf "%s\\n" "${COMPREPLY[@]}"\n')
        env = dict(os.environ, LINE=line, COMPRESSCTL=ARGS.compressctl)
        env.pop("COMPRESS_TOKEN", None)
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                              timeout=60, check=True)
        self.assertEqual(done.stderr, "")
        return sorted(word for word in done.stdout.split("\n") if word)

    def test_bash_completion_offers_job_ids_and_artifact_names(self):
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(SUBMITTER_TOKEN + "\n")
        job_id = self.job["name"].split("/", 1)[1]
        connection = f"compressctl --server={SERVER.address} --token_file {token_file}"
        self.assertIn(job_id, self.complete(f"{connection} watch "))
        self.assertEqual(self.complete(f"{connection} get {job_id[:6]}"), [job_id])
        self.assertEqual(self.complete(f"{connection} cancel jobs/{job_id[:6]}"),
                         [f"jobs/{job_id}"])
        self.assertEqual(self.complete(f"{connection} download {job_id} "),
                         sorted(a["name"] for a in self.finished["artifacts"]))
        # Without the token the server refuses: nothing is offered, nothing is printed.
        self.assertEqual(self.complete(f"compressctl --server={SERVER.address} get "), [])

    def test_zsh_completion_offers_job_ids_and_artifact_names(self):
        if not ARGS.compressctl or not shutil.which("zsh"):
            self.skipTest("needs --compressctl and zsh")
        token_file = os.path.join(self.tmp, "zsh-token")
        with open(token_file, "w") as f:
            f.write(SUBMITTER_TOKEN + "\n")
        job_id = self.job["name"].split("/", 1)[1]
        connection = f"compressctl --server={SERVER.address} --token_file {token_file}"

        def complete(line):
            done = subprocess.run(
                ["zsh", "-f", os.path.join(REPO, "tests", "client_python", "zsh_complete.zsh"),
                 os.path.join(REPO, "client", "completion", "compressctl.zsh"), line],
                env=dict(os.environ, COMPRESSCTL=ARGS.compressctl), capture_output=True,
                text=True, timeout=60, check=True)
            return sorted(word for word in done.stdout.split("\n") if word)

        self.assertEqual(complete(f"{connection} get {job_id[:6]}"), [job_id])
        self.assertEqual(complete(f"{connection} download {job_id} "),
                         sorted(a["name"] for a in self.finished["artifacts"]))

    def test_cancel_of_a_finished_job_is_failed_precondition(self):
        with self.assertRaises(CompressdError) as raised:
            self.client.cancel_job(self.job["name"])
        self.assertEqual(raised.exception.code, "FAILED_PRECONDITION")

    def test_get_of_a_missing_job_is_not_found(self):
        with self.assertRaises(CompressdError) as raised:
            self.client.get_job("jobs/no-such-job")
        self.assertEqual(raised.exception.code, "NOT_FOUND")
        self.assertIn("jobs/no-such-job", raised.exception.message)

    def test_a_malformed_job_name_is_invalid_argument(self):
        with self.assertRaises(CompressdError) as raised:
            self.client.get_job("jobs/a/b")
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")


class FailureTest(unittest.TestCase):
    """Jobs that fail or are cancelled, blobs and credentials."""

    @classmethod
    def setUpClass(cls):
        cls.client = Client(SERVER.address, token=SUBMITTER_TOKEN, timeout=20, retry_for=30)
        with open(SPEC_PATH) as f:
            cls.spec = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_wait_raises_on_a_failed_job(self):
        spec = copy.deepcopy(self.spec)
        spec["dataset"] = {"format": "fashion_mnist", "path": "/nonexistent/fashion-mnist",
                           "image_size": 16}
        job = self.client.create_job(spec, max_attempts=1)
        with self.assertRaises(JobFailedError) as raised:
            self.client.wait(job["name"], timeout=300)
        self.assertEqual(raised.exception.state, "FAILED")
        self.assertEqual(raised.exception.code, raised.exception.job["error_code"])
        self.assertTrue(raised.exception.code)
        self.assertIn(job["name"], str(raised.exception))
        with self.assertRaises(CompressdError) as no_report:
            self.client.report(job["name"])
        self.assertEqual(no_report.exception.code, "FAILED_PRECONDITION")

    def test_wait_raises_on_a_cancelled_job_and_delete_removes_it(self):
        spec = copy.deepcopy(self.spec)
        spec["teacher"]["train"]["max_steps"] = 100000
        spec["teacher"]["train"]["epochs"] = 1000
        job = self.client.create_job(json.dumps(spec))
        cancelling = self.client.cancel_job(job["name"])
        self.assertIn(cancelling["state"], ("CANCELLING", "CANCELLED"))
        with self.assertRaises(JobFailedError) as raised:
            self.client.wait(job["name"], timeout=120)
        self.assertEqual(raised.exception.state, "CANCELLED")
        self.client.delete_job(job["name"])
        with self.assertRaises(CompressdError) as raised:
            self.client.get_job(job["name"])
        self.assertEqual(raised.exception.code, "NOT_FOUND")

    def test_wait_with_a_timeout_raises_deadline_exceeded(self):
        spec = copy.deepcopy(self.spec)
        spec["teacher"]["train"]["max_steps"] = 100000
        spec["teacher"]["train"]["epochs"] = 1000
        job = self.client.create_job(spec, priority=-5)
        try:
            started = time.monotonic()
            with self.assertRaises(CompressdError) as raised:
                self.client.wait(job["name"], timeout=1.5)
            self.assertEqual(raised.exception.code, "DEADLINE_EXCEEDED")
            self.assertLess(time.monotonic() - started, 15)
        finally:
            self.client.cancel_job(job["name"])

    def test_an_invalid_spec_is_invalid_argument(self):
        spec = copy.deepcopy(self.spec)
        spec["no_such_field"] = 1
        with self.assertRaises(CompressdError) as raised:
            self.client.create_job(spec)
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(CompressdError) as raised:
            self.client.create_job(os.path.join(tempfile.gettempdir(), "no-such-spec.json"))
        self.assertEqual(raised.exception.code, "NOT_FOUND")

    def test_upload_blob_returns_the_sha256(self):
        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            data = os.urandom(3 * (1 << 20) + 12345)
            f.write(data)
            f.flush()
            self.assertEqual(self.client.upload_blob(f.name), hashlib.sha256(data).hexdigest())

    def test_calls_without_a_token_are_unauthenticated(self):
        with Client(SERVER.address) as anonymous:
            with self.assertRaises(CompressdError) as raised:
                anonymous.get_job("jobs/anything")
        self.assertEqual(raised.exception.code, "UNAUTHENTICATED")

    def test_a_viewer_may_list_but_not_create(self):
        with Client(SERVER.address, token=VIEWER_TOKEN) as viewer:
            list(viewer.list_jobs())
            with self.assertRaises(CompressdError) as raised:
                viewer.create_job(self.spec)
        self.assertEqual(raised.exception.code, "PERMISSION_DENIED")


class ReconnectTest(unittest.TestCase):
    """watch and wait across a restart of compressd (a server without workers, so the job stays
    QUEUED until it is cancelled)."""

    def test_watch_resumes_after_the_server_restarts(self):
        server = Server(ARGS, local_workers=0)
        try:
            client = Client(server.address, token=SUBMITTER_TOKEN, timeout=10, retry_for=60)
            job = client.create_job(SPEC_PATH)
            events = []
            failures = []
            seen_first = threading.Event()

            def follow():
                try:
                    for event in client.watch(job["name"]):
                        events.append(event)
                        seen_first.set()
                except CompressdError as e:
                    failures.append(e)
                    seen_first.set()

            watcher = threading.Thread(target=follow)
            watcher.start()
            self.assertTrue(seen_first.wait(30))
            before = len(events)
            server.restart()
            with Client(server.address, token=SUBMITTER_TOKEN, timeout=10) as other:
                other.cancel_job(job["name"])
            watcher.join(90)
            self.assertFalse(watcher.is_alive())
            self.assertEqual(failures, [])
            sequences = [int(e["sequence"]) for e in events]
            self.assertGreater(len(sequences), before)
            self.assertEqual(sequences, list(range(1, len(sequences) + 1)))
            self.assertEqual(events[-1].get("state_change", {}).get("state"), "CANCELLED")
            with self.assertRaises(JobFailedError) as raised:
                client.wait(job["name"], timeout=30)
            self.assertEqual(raised.exception.state, "CANCELLED")
            client.close()
        finally:
            server.stop()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--compressd", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--executor", required=True)
    parser.add_argument("--compressctl", default="",
                        help="for the bash completion's job names (skipped without it)")
    ARGS, rest = parser.parse_known_args()
    for binary in ("compressd", "worker", "executor", "compressctl"):
        if getattr(ARGS, binary):
            setattr(ARGS, binary, os.path.abspath(getattr(ARGS, binary)))
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
