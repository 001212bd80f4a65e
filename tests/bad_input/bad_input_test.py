#!/usr/bin/python3
"""Every row of the tables in docs/bad-input.md, run against the real programs.

    bad_input_test.py --compressd=BIN --compressctl=BIN --compress_run=BIN [--doc=FILE]
                      [unittest args, e.g. -k CompressRunTest]

The tables are read from the document itself: each row names a case id, where the input enters,
the status code (or exit status) and the message (verbatim, or its stable part). CASES below maps
every case id to the code that produces that input. For each row the test checks the entry point
against CASES, runs the case, and asserts the code, the exit status and that the message contains
the row's text (with $ROOT, $TMP, $FILE, $JOB and $SIZE replaced by the case's values).
TableTest checks that the document and CASES list the same ids, so neither can drift.

compressd is started once on a free loopback port with a token file (a submitter and a viewer of
tenant "ml", an admin and a worker of tenant "ops"), --data_root, a 1024-byte --max_blob_bytes
and no workers: every job created stays QUEUED. The gRPC cases use the Python stubs of
proto/compress/v1 (PYTHONPATH, target compress_python_stubs).
"""

import argparse
import collections
import copy
import gzip
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

import grpc
from google.protobuf import json_format

from compress.v1 import compression_service_pb2 as pb
from compress.v1 import compression_service_pb2_grpc as pb_grpc
from compress.v1 import job_spec_pb2
from compress.v1 import worker_service_pb2
from compress.v1 import worker_service_pb2_grpc
from compressd_process import wait_until_listening

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SUBMITTER_TOKEN = "submitter-" + "a" * 32
VIEWER_TOKEN = "viewer-" + "b" * 32
ADMIN_TOKEN = "admin-" + "c" * 32
WORKER_TOKEN = "worker-" + "d" * 32
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
MAX_BLOB_BYTES = 1024

ARGS = None

# --------------------------------------------------------------------------------------------
# The document's rows.

Row = collections.namedtuple("Row", "case input entry code exit message line")
ROW_RE = re.compile(r"^\|\s*`([a-z0-9][a-z0-9-]*)`\s*\|")


def split_cells(line):
    """The cells of a Markdown table line; `\\|` is a literal pipe."""
    cells, cell, i = [], "", 1
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cell += "|"
            i += 2
            continue
        if line[i] == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += line[i]
        i += 1
    return cells


def code_span(cell):
    """The text of the first code span of a cell, None when there is none."""
    match = re.search(r"`([^`]*)`", cell)
    return match.group(1) if match else None


def parse_rows(path):
    """Rows of every table whose first cell is a case id in backticks."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not ROW_RE.match(line):
                continue
            cells = split_cells(line)
            if len(cells) != 5:
                raise ValueError(f"{path}:{number}: expected 5 cells, got {len(cells)}: {line}")
            case, what, entry, code_cell, message_cell = cells
            exit_match = re.search(r"exit (\d+)", code_cell)
            code = code_span(code_cell)
            if code is not None and code.startswith("exit "):
                code = None
            message = code_span(message_cell)
            if message is None:
                raise ValueError(f"{path}:{number}: the message cell has no `code span`")
            rows.append(Row(code_span(case), what, entry, code,
                            int(exit_match.group(1)) if exit_match else None, message, number))
    return rows


# --------------------------------------------------------------------------------------------
# What a case returns.

Outcome = collections.namedtuple("Outcome", "code message exit subs")


def outcome(code, message, exit_status=None, **subs):
    return Outcome(code, message, exit_status, subs)


# --------------------------------------------------------------------------------------------
# Fixtures: scratch space, compressd, channels.


class Env:
    """Created once per run: a scratch folder, a data root, and compressd when a case needs it."""

    def __init__(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="compress-bad-input-"))
        self.root = os.path.join(self.tmp, "root")
        os.makedirs(self.root)
        self.counter = 0
        self.server = None
        self.lock = threading.Lock()

    def scratch(self, name):
        """A new empty folder for one case."""
        self.counter += 1
        path = os.path.join(self.tmp, f"{self.counter:03d}-{name}")
        os.makedirs(path)
        return path

    def compressd(self):
        with self.lock:
            if self.server is None:
                self.server = Server(self)
            return self.server

    def close(self):
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Server:
    """compressd on a free loopback port with tokens, --data_root and a small blob limit; the
    jobs `ml_jobs` (two, tenant ml) and `ops_job` (tenant ops) are created at start."""

    def __init__(self, env):
        self.dir = os.path.join(env.tmp, "compressd")
        os.makedirs(self.dir)
        self.tokens = os.path.join(self.dir, "tokens")
        with open(self.tokens, "w") as f:
            f.write(f"{SUBMITTER_TOKEN} ml submitter\n{VIEWER_TOKEN} ml viewer\n"
                    f"{ADMIN_TOKEN} ops admin\n{WORKER_TOKEN} ops worker\n")
        self.submitter_token_file = os.path.join(self.dir, "submitter-token")
        with open(self.submitter_token_file, "w") as f:
            f.write(SUBMITTER_TOKEN + "\n")
        self.log_path = os.path.join(self.dir, "compressd.log")
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [ARGS.compressd, "--grpc_address=127.0.0.1:0", "--metrics_address=",
             f"--token_file={self.tokens}", f"--data_dir={os.path.join(self.dir, 'data')}",
             f"--data_root={env.root}", f"--max_blob_bytes={MAX_BLOB_BYTES}",
             "--local_workers=0"],
            stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        self.address, self.reader = wait_until_listening(self.process)
        if self.address is None:
            self.stop()
            raise RuntimeError(f"compressd did not start; log:\n{self.read_log()}")
        self.channel = grpc.insecure_channel(self.address)
        self.jobs = pb_grpc.CompressionServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.ml_jobs = [self._create(SUBMITTER_TOKEN, f"ml-{i}") for i in range(2)]
        self.ops_job = self._create(ADMIN_TOKEN, "ops-0")

    def _create(self, token, request_id):
        request = pb.CreateJobRequest(spec=spec_proto(tiny_spec()), request_id=request_id)
        job = self.jobs.CreateJob(request, metadata=bearer(token), timeout=20)
        return job.name.split("/", 1)[1]

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self):
        if hasattr(self, "channel"):
            self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(10)
        self.log.close()


ENV = None


def bearer(token):
    return [("authorization", f"Bearer {token}")] if token else []


def call(method, request, token=SUBMITTER_TOKEN, metadata=None, timeout=20):
    """Outcome of a unary (or stream-unary, with an iterator) call."""
    try:
        method(request, metadata=metadata if metadata is not None else bearer(token),
               timeout=timeout)
    except grpc.RpcError as error:
        return outcome(error.code().name, error.details())
    return outcome("OK", "")


def first_stream_error(method, request, token=SUBMITTER_TOKEN):
    """Outcome of a server-streaming call: the status it ends with."""
    try:
        for _ in method(request, metadata=bearer(token), timeout=20):
            pass
    except grpc.RpcError as error:
        return outcome(error.code().name, error.details())
    return outcome("OK", "")


# --------------------------------------------------------------------------------------------
# Specs and files.


def tiny_spec():
    with open(os.path.join(REPO, "client", "examples", "tiny-synthetic-job.json")) as f:
        return json.load(f)


def spec_proto(spec):
    return json_format.ParseDict(spec, job_spec_pb2.JobSpec())


def with_field(spec, path, value):
    """A copy of `spec` with the dotted `path` set to `value` (None removes it)."""
    spec = copy.deepcopy(spec)
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return spec


def write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def safetensors(tensors, header_extra=None):
    """A safetensors file: {name: (dtype, shape, bytes)}; offsets follow in order."""
    header, data, offset = {}, b"", 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32(shape):
    count = 1
    for size in shape:
        count *= size
    return ("F32", list(shape), b"\0" * (4 * count))


def tiny_state_dict(embed_dim, num_classes=4):
    """The F32 tensors (timm names) of the tiny spec's model with `embed_dim`: 16x16x1 input,
    patch 2, depths [1, 1], heads [1, 2], window 4, MLP ratio 2, `num_classes` classes."""
    tensors = {}
    dims = [embed_dim, 2 * embed_dim]
    heads = [1, 2]
    window = 4
    tensors["patch_embed.proj.weight"] = f32([embed_dim, 1, 2, 2])
    tensors["patch_embed.proj.bias"] = f32([embed_dim])
    tensors["patch_embed.norm.weight"] = f32([embed_dim])
    tensors["patch_embed.norm.bias"] = f32([embed_dim])
    for s, dim in enumerate(dims):
        if s > 0:
            tensors[f"layers.{s}.downsample.norm.weight"] = f32([4 * dims[s - 1]])
            tensors[f"layers.{s}.downsample.norm.bias"] = f32([4 * dims[s - 1]])
            tensors[f"layers.{s}.downsample.reduction.weight"] = f32([dim, 4 * dims[s - 1]])
        p = f"layers.{s}.blocks.0."
        for norm in ("norm1", "norm2"):
            tensors[p + norm + ".weight"] = f32([dim])
            tensors[p + norm + ".bias"] = f32([dim])
        tensors[p + "attn.qkv.weight"] = f32([3 * dim, dim])
        tensors[p + "attn.qkv.bias"] = f32([3 * dim])
        tensors[p + "attn.proj.weight"] = f32([dim, dim])
        tensors[p + "attn.proj.bias"] = f32([dim])
        tensors[p + "attn.relative_position_bias_table"] = f32([(2 * window - 1) ** 2, heads[s]])
        tensors[p + "mlp.fc1.weight"] = f32([2 * dim, dim])
        tensors[p + "mlp.fc1.bias"] = f32([2 * dim])
        tensors[p + "mlp.fc2.weight"] = f32([dim, 2 * dim])
        tensors[p + "mlp.fc2.bias"] = f32([dim])
    tensors["norm.weight"] = f32([dims[-1]])
    tensors["norm.bias"] = f32([dims[-1]])
    tensors["head.fc.weight"] = f32([num_classes, dims[-1]])
    tensors["head.fc.bias"] = f32([num_classes])
    return tensors


def tiny_config(embed_dim, num_classes):
    """config.json (docs/checkpoints.md) of tiny_state_dict's model."""
    stages = [{"dim": dim, "blocks": [{"num_heads": heads, "head_dim": dim // heads,
                                       "mlp_hidden": 2 * dim}]}
              for dim, heads in ((embed_dim, 1), (2 * embed_dim, 2))]
    return {"format_version": 1, "architecture": "swin", "image_size": 16, "in_channels": 1,
            "num_classes": num_classes, "patch_size": 2, "window_size": 4,
            "drop_path_rate": 0.0, "qkv_bias": True, "stages": stages}


def teacher_spec(checkpoint_path, embed_dim=16):
    """The tiny spec on 16 synthetic images with a given teacher and no training."""
    spec = tiny_spec()
    spec["model"]["config"]["embed_dim"] = embed_dim
    spec["dataset"].update({"synthetic_train": 16, "synthetic_val": 8})
    spec["teacher"] = {"checkpoint_path": checkpoint_path}
    return spec


def dataset_spec(fmt, path):
    spec = tiny_spec()
    spec["dataset"] = {"format": fmt, "path": path, "image_size": 16}
    return spec


# --------------------------------------------------------------------------------------------
# Running the programs.


def run_compressctl(args, token_file=True, env_token=None, timeout=60):
    server = ENV.compressd()
    command = [ARGS.compressctl, f"--server={server.address}", "--timeout=20s"]
    if token_file:
        command.append(f"--token_file={server.submitter_token_file}")
    env = {k: v for k, v in os.environ.items() if k != "COMPRESS_TOKEN"}
    if env_token is not None:
        env["COMPRESS_TOKEN"] = env_token
    done = subprocess.run(command + args, capture_output=True, text=True, timeout=timeout,
                          env=env)
    return ctl_outcome(done)


def ctl_outcome(done):
    """compressctl prints `compressctl: WHAT: CODE: message` (RPC and I/O errors) or
    `compressctl: problem` and its usage (flag errors)."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("compressctl: ")]
    if not lines:
        return outcome(None, done.stderr, done.returncode)
    line = lines[0]
    match = re.match(r"compressctl: (.*?): ([A-Z_]+): (.*)$", line)
    if match:
        return outcome(match.group(2), match.group(3), done.returncode)
    return outcome(None, line[len("compressctl: "):], done.returncode)


def run_compress_run(spec, name, raw_spec=None, args=None, folder=None, preexec_fn=None):
    """compress-run on `spec` (a dict) or `raw_spec` (text) in a fresh work dir (`folder`/work,
    `folder` a new scratch folder unless given), `preexec_fn` run in the child before it starts;
    the outcome of its last stdout line, which must be an `error` event."""
    folder = folder or ENV.scratch(name)
    spec_path = os.path.join(folder, "spec.json")
    write(spec_path, raw_spec if raw_spec is not None else json.dumps(spec))
    command = [ARGS.compress_run]
    command += args if args is not None else [f"--spec={spec_path}",
                                              f"--workdir={os.path.join(folder, 'work')}",
                                              "--device=cpu", "--threads=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          preexec_fn=preexec_fn)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        return outcome(None, f"no stdout; stderr: {done.stderr[-2000:]}", done.returncode)
    event = json.loads(lines[-1])
    if event.get("type") != "error":
        return outcome(None, f"last line is not an error: {lines[-1]}", done.returncode)
    return outcome(event["code"], event["message"], done.returncode, FILE=spec_path)


def run_compressd(flags, name):
    """compressd with `flags`, which it must refuse: its exit status and stderr."""
    folder = ENV.scratch(name)
    command = [ARGS.compressd, "--grpc_address=127.0.0.1:0", "--metrics_address=",
               f"--data_dir={os.path.join(folder, 'data')}"] + flags
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return outcome(None, "compressd accepted the flags and kept running", None)
    return outcome(None, done.stderr, done.returncode)


# --------------------------------------------------------------------------------------------
# The cases: id -> (entry point, function returning an Outcome).

CASES = {}


def case(case_id, entry):
    def register(fn):
        if case_id in CASES:
            raise ValueError(f"case {case_id} defined twice")
        CASES[case_id] = (entry, fn)
        return fn
    return register


def submit_file(name, text):
    path = write(os.path.join(ENV.scratch(name), "spec.json"), text)
    result = run_compressctl(["submit", path])
    return result._replace(subs={"FILE": path})


def create(spec, token=SUBMITTER_TOKEN, **request):
    """CreateJob of `spec` (a dict) with the other fields of CreateJobRequest in `request`."""
    server = ENV.compressd()
    return call(server.jobs.CreateJob, pb.CreateJobRequest(spec=spec_proto(spec), **request),
                token)


# Job spec fields.

@case("spec-wrong-type-ctl", "compressctl submit")
def _():
    return submit_file("wrong-type", json.dumps(with_field(tiny_spec(), "dataset.image_size",
                                                           "big")))


@case("spec-wrong-type-run", "compress-run")
def _():
    return run_compress_run(with_field(tiny_spec(), "teacher.train.epochs", "one"), "wrong-type")


@case("spec-wrong-type-object-run", "compress-run")
def _():
    return run_compress_run(with_field(tiny_spec(), "dataset", "synthetic"), "wrong-type-object")


@case("spec-out-of-range-grpc", "gRPC CreateJob")
def _():
    spec = with_field(tiny_spec(), "prune", {"enabled": True, "target_macs_reduction": 1.5})
    return create(spec)


@case("spec-out-of-range-ctl", "compressctl submit")
def _():
    spec = with_field(tiny_spec(), "prune", {"enabled": True, "target_macs_reduction": 1.5})
    return submit_file("out-of-range", json.dumps(spec))


@case("spec-two-prune-targets-grpc", "gRPC CreateJob")
def _():
    spec = with_field(tiny_spec(), "prune", {"enabled": True, "target_macs_reduction": 0.3,
                                             "target_params_reduction": 0.5})
    return create(spec)


@case("spec-out-of-range-run", "compress-run")
def _():
    return run_compress_run(with_field(tiny_spec(), "resources.threads", 5000), "out-of-range")


@case("spec-negative-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "teacher.train.batch_size", -16))


@case("spec-unknown-enum-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "dataset.format", "mnist"))


@case("spec-nan-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "teacher.train.lr", "NaN"))


@case("spec-synthetic-classes-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "model.config.num_classes", 10))


@case("spec-control-character-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "dataset.path", "/data/set\nname"))


@case("spec-unknown-device-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "resources.device", "tpu"))


@case("spec-unknown-enum-run", "compress-run")
def _():
    return run_compress_run(with_field(tiny_spec(), "teacher.naming", "hf"), "unknown-enum")


@case("spec-unknown-field-ctl", "compressctl submit")
def _():
    spec = with_field(tiny_spec(), "prune", {"enabled": True, "target": 0.3})
    return submit_file("unknown-field", json.dumps(spec))


@case("spec-unknown-field-run", "compress-run")
def _():
    spec = with_field(tiny_spec(), "prune", {"enabled": True, "target": 0.3})
    return run_compress_run(spec, "unknown-field")


@case("spec-missing-format-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "dataset.format", None))


@case("spec-missing-path-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "dataset", {"format": "fashion_mnist"}))


@case("spec-missing-teacher-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "teacher", None))


@case("spec-missing-config-field-run", "compress-run")
def _():
    return run_compress_run(with_field(tiny_spec(), "model.config.embed_dim", None),
                            "missing-config-field")


@case("spec-model-shape-grpc", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "model.config.num_heads", [3, 2]))


# A spec whose last brace is missing.
BAD_JSON = '{\n  "dataset": {"format": "synthetic"},\n  "teacher": {"train": {"epochs": 1}}\n'


@case("spec-bad-json-ctl", "compressctl submit")
def _():
    return submit_file("bad-json", BAD_JSON)


@case("spec-bad-json-run", "compress-run")
def _():
    return run_compress_run(None, "bad-json", raw_spec=BAD_JSON)


@case("spec-not-object-run", "compress-run")
def _():
    return run_compress_run(None, "not-object", raw_spec="[1, 2, 3]")


@case("spec-file-missing-ctl", "compressctl submit")
def _():
    path = os.path.join(ENV.tmp, "no-such-spec.json")
    return run_compressctl(["submit", path])._replace(subs={"FILE": path})


@case("spec-file-directory-ctl", "compressctl submit")
def _():
    path = ENV.scratch("spec-dir")
    return run_compressctl(["submit", path])._replace(subs={"FILE": path})


@case("spec-file-missing-run", "compress-run")
def _():
    path = os.path.join(ENV.tmp, "no-such-spec.json")
    result = run_compress_run(None, "file-missing", args=[f"--spec={path}",
                                                          f"--workdir={ENV.tmp}/w"])
    return result._replace(subs={"FILE": path})


@case("run-no-workdir", "compress-run")
def _():
    return run_compress_run(tiny_spec(), "no-workdir", args=["--spec=x.json"])


@case("spec-file-directory-run", "compress-run")
def _():
    folder = ENV.scratch("spec-directory")
    result = run_compress_run(None, "spec-directory", args=[f"--spec={folder}",
                                                            f"--workdir={folder}/work"])
    return result._replace(subs={"FILE": folder})


@case("spec-duplicate-key-run", "compress-run")
def _():
    text = json.dumps(tiny_spec())
    text = text.replace('"epochs": 1', '"epochs": 1, "epochs": 2', 1)
    return run_compress_run(None, "duplicate-key", raw_spec=text)


def run_with_flag(name, flag):
    """compress-run on a valid spec with `flag` added to --spec and --workdir."""
    folder = ENV.scratch(name)
    spec_path = os.path.join(folder, "spec.json")
    write(spec_path, json.dumps(tiny_spec()))
    return run_compress_run(None, name, args=[f"--spec={spec_path}", f"--workdir={folder}/work",
                                              flag])


@case("run-threads-range", "compress-run")
def _():
    return run_with_flag("threads-range", "--threads=100000")


@case("run-unknown-flag", "compress-run")
def _():
    return run_with_flag("unknown-flag", "--thread=2")


@case("run-flag-value", "compress-run")
def _():
    return run_with_flag("flag-value", "--threads=two")


@case("request-labels-grpc", "gRPC CreateJob")
def _():
    return create(tiny_spec(), labels={"Team": "vision"})


@case("request-label-control-grpc", "gRPC CreateJob")
def _():
    return create(tiny_spec(), labels={"team": "vi\nsion"})


@case("request-id-control-grpc", "gRPC CreateJob")
def _():
    return create(tiny_spec(), request_id="abc\x00")


@case("list-filter-label-key-grpc", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(filter='labels.Team = "x"'),
                SUBMITTER_TOKEN)


@case("request-max-attempts-grpc", "gRPC CreateJob")
def _():
    return create(tiny_spec(), max_attempts=101)


@case("request-id-too-long-grpc", "gRPC CreateJob")
def _():
    return create(tiny_spec(), request_id="r" * 129)


@case("ctl-bad-label", "compressctl flags")
def _():
    return run_compressctl(["submit", "x.json", "--label", "team"])


@case("ctl-label-twice", "compressctl flags")
def _():
    return run_compressctl(["submit", "x.json", "--label", "team=vision", "--label", "team=other"])


@case("ctl-server-port", "compressctl flags")
def _():
    return run_compressctl(["--server=127.0.0.1:99999", "get", "j"])


@case("ctl-bad-output", "compressctl flags")
def _():
    return run_compressctl(["--output=yaml", "list"])


@case("ctl-flag-of-another-command", "compressctl flags")
def _():
    return run_compressctl(["get", "nosuchjob", "--wait"])


# Oversized messages and blobs.

@case("message-too-large-grpc", "gRPC CreateJob")
def _():
    spec = with_field(tiny_spec(), "dataset.path", "x" * DEFAULT_MAX_MESSAGE_BYTES)
    request = pb.CreateJobRequest(spec=spec_proto(spec))
    result = call(ENV.compressd().jobs.CreateJob, request)
    return result._replace(subs={"SIZE": str(request.ByteSize())})


@case("message-too-large-ctl", "compressctl submit")
def _():
    spec = with_field(tiny_spec(), "dataset.path", "x" * DEFAULT_MAX_MESSAGE_BYTES)
    size = pb.CreateJobRequest(spec=spec_proto(spec)).ByteSize()
    return submit_file("too-large", json.dumps(spec))._replace(subs={"SIZE": str(size)})


def upload(chunks, token=SUBMITTER_TOKEN):
    requests = iter([pb.UploadBlobRequest(**chunk) for chunk in chunks])
    return call(ENV.compressd().jobs.UploadBlob, requests, token)


@case("blob-stated-too-large", "gRPC UploadBlob")
def _():
    return upload([{"size_bytes": 4096, "data": b"x" * 100}])


@case("blob-sent-too-large", "gRPC UploadBlob")
def _():
    return upload([{"data": b"x" * 600}, {"data": b"x" * 600}])


@case("blob-sha256-mismatch", "gRPC UploadBlob")
def _():
    return upload([{"sha256": "0" * 64, "data": b"weights"}])


@case("blob-size-mismatch", "gRPC UploadBlob")
def _():
    return upload([{"size_bytes": 10, "data": b"weights"}])


@case("blob-late-sha256", "gRPC UploadBlob")
def _():
    return upload([{"data": b"weights"}, {"sha256": "0" * 64, "data": b"more"}])


@case("blob-bad-sha256", "gRPC UploadBlob")
def _():
    return upload([{"sha256": "XYZ", "data": b"weights"}])


@case("blob-not-uploaded", "gRPC CreateJob")
def _():
    spec = with_field(tiny_spec(), "teacher", {"blob_sha256": "e" * 64})
    return create(spec)


@case("blob-bad-sha256-spec", "gRPC CreateJob")
def _():
    return create(with_field(tiny_spec(), "teacher", {"blob_sha256": "E" * 64}))


# Corrupt and truncated checkpoints, wrong-shaped weights.

def run_checkpoint(name, data, embed_dim=16):
    folder = ENV.scratch(name)
    path = write(os.path.join(folder, "teacher.safetensors"), data)
    result = run_compress_run(teacher_spec(path, embed_dim), name)
    return result._replace(subs={"FILE": path})


@case("ckpt-short", "compress-run teacher")
def _():
    return run_checkpoint("short", b"\x10\0\0")


@case("ckpt-header-too-long", "compress-run teacher")
def _():
    return run_checkpoint("header-too-long", struct.pack("<Q", 1 << 40) + b"{}")


@case("ckpt-header-past-end", "compress-run teacher")
def _():
    return run_checkpoint("header-past-end", struct.pack("<Q", 1000) + b'{"a": 1}')


@case("ckpt-header-not-json", "compress-run teacher")
def _():
    text = b'{"patch_embed.proj.weight": {"dtype": "F32",'
    return run_checkpoint("header-not-json", struct.pack("<Q", len(text)) + text)


@case("ckpt-header-too-many-tensors", "compress-run teacher")
def _():
    # Well-formed, but each entry would cost memory beyond its text (3.7 MB of header here; the
    # format allows 100 MB).
    entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    text = ("{" + ",".join(entry % i for i in range(65537)) + "}").encode()
    return run_checkpoint("header-too-many-tensors", struct.pack("<Q", len(text)) + text)


@case("ckpt-truncated-data", "compress-run teacher")
def _():
    return run_checkpoint("truncated-data", safetensors(tiny_state_dict(16))[:-32])


@case("ckpt-unknown-dtype", "compress-run teacher")
def _():
    tensors = tiny_state_dict(16)
    tensors["norm.bias"] = ("F8_E4M3", [32], b"\0" * 32)
    return run_checkpoint("unknown-dtype", safetensors(tensors))


@case("ckpt-dtype-size-mismatch", "compress-run teacher")
def _():
    tensors = tiny_state_dict(16)
    tensors["norm.bias"] = ("F64", [32], b"\0" * 128)
    return run_checkpoint("dtype-size", safetensors(tensors))


@case("ckpt-integer-dtype", "compress-run teacher")
def _():
    tensors = tiny_state_dict(16)
    tensors["norm.bias"] = ("I32", [32], b"\0" * 128)
    return run_checkpoint("integer-dtype", safetensors(tensors))


@case("ckpt-wrong-shapes", "compress-run teacher")
def _():
    return run_checkpoint("wrong-shapes", safetensors(tiny_state_dict(24)))


@case("ckpt-missing-tensor", "compress-run teacher")
def _():
    tensors = tiny_state_dict(16)
    del tensors["head.fc.bias"]
    tensors["head.bias"] = f32([4])
    return run_checkpoint("missing-tensor", safetensors(tensors))


@case("ckpt-missing-file", "compress-run teacher")
def _():
    path = os.path.join(ENV.tmp, "no-such-teacher.safetensors")
    return run_compress_run(teacher_spec(path), "missing-file")._replace(subs={"FILE": path})


@case("ckpt-dir-bad-config", "compress-run teacher")
def _():
    folder = ENV.scratch("dir-bad-config")
    write(os.path.join(folder, "config.json"), json.dumps({"format_version": 1}))
    write(os.path.join(folder, "model.safetensors"), safetensors(tiny_state_dict(16)))
    result = run_compress_run(teacher_spec(folder), "dir-bad-config")
    return result._replace(subs={"FILE": os.path.join(folder, "config.json")})


@case("ckpt-dir-wrong-classes", "compress-run teacher")
def _():
    folder = ENV.scratch("dir-wrong-classes")
    write(os.path.join(folder, "config.json"), json.dumps(tiny_config(16, 7)))
    write(os.path.join(folder, "model.safetensors"), safetensors(tiny_state_dict(16, 7)))
    result = run_compress_run(teacher_spec(folder), "dir-wrong-classes")
    return result._replace(subs={"FILE": folder})


# A work dir holding another model's trainer checkpoint.

@case("workdir-trainer-wrong-shapes", "compress-run workdir")
def _():
    # The trainer checkpoint of the same job with embed_dim 24, left where the teacher phase of
    # a new run with embed_dim 16 resumes from (as a corrupt or hand-edited file would be).
    wide = ENV.scratch("trainer-wide")
    write(os.path.join(wide, "spec.json"), json.dumps(with_field(tiny_spec(),
                                                                 "model.config.embed_dim", 24)))
    done = subprocess.run([ARGS.compress_run, f"--spec={os.path.join(wide, 'spec.json')}",
                           f"--workdir={os.path.join(wide, 'work')}", "--device=cpu",
                           "--threads=1"], capture_output=True, text=True, timeout=120)
    source = os.path.join(wide, "work", "phases", "teacher", "trainer", "trainer_state.pt")
    if done.returncode != 0 or not os.path.exists(source):
        return outcome(None, f"the embed_dim 24 run left no checkpoint: {done.stdout[-2000:]}")
    folder = ENV.scratch("trainer-wrong-shapes")
    target = os.path.join(folder, "work", "phases", "teacher", "trainer", "trainer_state.pt")
    os.makedirs(os.path.dirname(target))
    shutil.copyfile(source, target)
    return run_compress_run(tiny_spec(), "trainer-wrong-shapes", folder=folder)._replace(
        subs={"FILE": target})


@case("workdir-file-size-limit", "compress-run workdir")
def _():
    # Files may grow to 8 KiB (SIGXFSZ at its default, as subprocess restores it): the trainer's
    # checkpoint is the first file past that.
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return run_compress_run(tiny_spec(), "file-size-limit", preexec_fn=limit)


# Missing data sets.

@case("data-missing-path", "compress-run dataset")
def _():
    path = os.path.join(ENV.tmp, "no-such-data")
    return run_compress_run(dataset_spec("fashion_mnist", path), "data-missing")._replace(
        subs={"FILE": path})


@case("data-empty-folder-idx", "compress-run dataset")
def _():
    path = ENV.scratch("empty-idx")
    return run_compress_run(dataset_spec("fashion_mnist", path), "data-empty-idx")._replace(
        subs={"FILE": path})


@case("data-gzip-bomb-idx", "compress-run dataset")
def _():
    # The header announces one 28x28 image (800 bytes); the stream inflates to 16 MiB more.
    path = ENV.scratch("gzip-bomb")
    files = {
        "train-images-idx3-ubyte.gz": struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(16 << 20),
        "train-labels-idx1-ubyte.gz": struct.pack(">II", 0x801, 1) + bytes(1),
        "t10k-images-idx3-ubyte.gz": struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(784),
        "t10k-labels-idx1-ubyte.gz": struct.pack(">II", 0x801, 1) + bytes(1),
    }
    for name, data in files.items():
        write(os.path.join(path, name), gzip.compress(data))
    return run_compress_run(dataset_spec("fashion_mnist", path), "data-gzip-bomb")._replace(
        subs={"FILE": path})


@case("data-idx-trailing-bytes", "compress-run dataset")
def _():
    path = ENV.scratch("idx-trailing")
    files = {
        "train-images-idx3-ubyte": struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(785),
        "train-labels-idx1-ubyte": struct.pack(">II", 0x801, 1) + bytes(1),
        "t10k-images-idx3-ubyte": struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(784),
        "t10k-labels-idx1-ubyte": struct.pack(">II", 0x801, 1) + bytes(1),
    }
    for name, data in files.items():
        write(os.path.join(path, name), data)
    return run_compress_run(dataset_spec("fashion_mnist", path), "data-idx-trailing")._replace(
        subs={"FILE": path})


@case("data-empty-folder-image", "compress-run dataset")
def _():
    path = ENV.scratch("empty-image")
    return run_compress_run(dataset_spec("image_folder", path), "data-empty-image")._replace(
        subs={"FILE": path})


@case("data-no-classes", "compress-run dataset")
def _():
    path = ENV.scratch("no-classes")
    os.makedirs(os.path.join(path, "train"))
    os.makedirs(os.path.join(path, "val"))
    return run_compress_run(dataset_spec("image_folder", path), "data-no-classes")._replace(
        subs={"FILE": path})


@case("data-not-a-folder-idx", "compress-run dataset")
def _():
    path = write(os.path.join(ENV.scratch("data-file"), "data.bin"), b"not a folder")
    return run_compress_run(dataset_spec("fashion_mnist", path), "data-file")._replace(
        subs={"FILE": path})


# Path escapes (compressd runs with --data_root=$ROOT).

def escape(field, path):
    spec = tiny_spec()
    if field == "dataset":
        spec["dataset"] = {"format": "fashion_mnist", "path": path}
    else:
        spec["teacher"] = {"checkpoint_path": path}
    return create(spec)._replace(subs={"ROOT": ENV.root})


@case("path-dotdot", "gRPC CreateJob")
def _():
    return escape("dataset", ENV.root + "/../secrets")._replace(
        subs={"ROOT": ENV.root, "TMP": ENV.tmp})


@case("path-absolute-outside", "gRPC CreateJob")
def _():
    return escape("dataset", "/etc")


@case("path-symlink-out", "gRPC CreateJob")
def _():
    link = os.path.join(ENV.root, "link-out")
    if not os.path.islink(link):
        os.symlink("/etc", link)
    return escape("teacher", link + "/passwd")


@case("path-relative", "gRPC CreateJob")
def _():
    return escape("dataset", "fashion-mnist")


@case("path-dotdot-ctl", "compressctl submit")
def _():
    spec = tiny_spec()
    spec["dataset"] = {"format": "fashion_mnist", "path": ENV.root + "/../secrets"}
    return submit_file("dotdot", json.dumps(spec))._replace(
        subs={"ROOT": ENV.root, "TMP": ENV.tmp})


@case("job-name-dotdot", "gRPC GetJob")
def _():
    return call(ENV.compressd().jobs.GetJob, pb.GetJobRequest(name="jobs/../../etc"))


@case("artifact-name-dotdot", "gRPC ReadArtifact")
def _():
    server = ENV.compressd()
    name = f"jobs/{server.ml_jobs[0]}/artifacts/../jobs.db"
    return first_stream_error(server.jobs.ReadArtifact, pb.ReadArtifactRequest(name=name))._replace(
        subs={"JOB": server.ml_jobs[0]})


# compressd flags.

@case("flag-data-root-missing", "compressd flags")
def _():
    path = os.path.join(ENV.tmp, "no-such-root")
    return run_compressd(["--insecure", f"--data_root={path}"], "root-missing")._replace(
        subs={"FILE": path})


@case("flag-data-root-file", "compressd flags")
def _():
    path = write(os.path.join(ENV.scratch("root-file"), "file"), "x")
    return run_compressd(["--insecure", f"--data_root={path}"], "root-file")._replace(
        subs={"FILE": path})


@case("flag-port-range", "compressd flags")
def _():
    return run_compressd(["--insecure", "--grpc_address=127.0.0.1:99999"], "port-range")


@case("flag-data-root-empty", "compressd flags")
def _():
    return run_compressd(["--insecure", "--data_root="], "root-empty")


@case("flag-data-root-empty-flagfile", "compressd flags")
def _():
    flagfile = write(os.path.join(ENV.scratch("root-empty-flagfile"), "flags"), "--data_root=\n")
    return run_compressd(["--insecure", f"--flagfile={flagfile}"], "root-empty-flagfile")


@case("flag-rpc-threads", "compressd flags")
def _():
    return run_compressd(["--insecure", "--rpc_threads=0"], "rpc-threads")


@case("flag-stray-argument", "compressd flags")
def _():
    return run_compressd(["--insecure", "serve"], "stray-argument")


@case("flag-max-message-bytes", "compressd flags")
def _():
    return run_compressd(["--insecure", "--max_message_bytes=1000"], "max-message")


@case("flag-max-file-streams", "compressd flags")
def _():
    return run_compressd(["--insecure", "--max_file_streams=-1"], "max-file-streams")


@case("flag-keepalive-time", "compressd flags")
def _():
    return run_compressd(["--insecure", "--keepalive_time=0s"], "keepalive-time")


@case("flag-not-a-number", "compressd flags")
def _():
    return run_compressd(["--insecure", "--lease_seconds=soon"], "not-a-number")


@case("flag-no-auth", "compressd flags")
def _():
    return run_compressd([], "no-auth")


@case("flag-insecure-remote", "compressd flags")
def _():
    return run_compressd(["--insecure", "--grpc_address=0.0.0.0:0"], "insecure-remote")


@case("flag-tls-half", "compressd flags")
def _():
    return run_compressd(["--insecure", "--tls_cert=/x.pem"], "tls-half")


@case("flag-token-file-missing", "compressd flags")
def _():
    path = os.path.join(ENV.tmp, "no-such-tokens")
    return run_compressd([f"--token_file={path}"], "tokens-missing")._replace(subs={"FILE": path})


@case("flag-token-too-short", "compressd flags")
def _():
    path = write(os.path.join(ENV.scratch("tokens-short"), "tokens"), "# tokens\nshort ml viewer\n")
    return run_compressd([f"--token_file={path}"], "tokens-short")._replace(subs={"FILE": path})


@case("flag-token-bad-role", "compressd flags")
def _():
    path = write(os.path.join(ENV.scratch("tokens-role"), "tokens"),
                 f"{'t' * 32} ml root\n")
    return run_compressd([f"--token_file={path}"], "tokens-role")._replace(subs={"FILE": path})


# Bad tokens.

@case("token-none", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(), token=None)


@case("token-unknown", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(), token="x" * 40)


@case("token-not-bearer", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(),
                metadata=[("authorization", f"Basic {SUBMITTER_TOKEN}")])


@case("token-viewer-creates", "gRPC CreateJob")
def _():
    return create(tiny_spec(), token=VIEWER_TOKEN)


@case("token-worker-lists", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(), token=WORKER_TOKEN)


@case("token-submitter-leases", "gRPC LeaseJob")
def _():
    request = worker_service_pb2.LeaseJobRequest(worker_id="w1")
    return call(ENV.compressd().workers.LeaseJob, request)


@case("token-none-ctl", "compressctl list")
def _():
    return run_compressctl(["list"], token_file=False)


@case("token-unknown-ctl", "compressctl list")
def _():
    return run_compressctl(["list"], token_file=False, env_token="y" * 40)


@case("token-file-missing-ctl", "compressctl flags")
def _():
    path = os.path.join(ENV.tmp, "no-such-token")
    return run_compressctl([f"--token_file={path}", "list"], token_file=False)._replace(
        subs={"FILE": path})


@case("token-and-token-file-ctl", "compressctl flags")
def _():
    return run_compressctl(["--token=" + SUBMITTER_TOKEN, "list"])


@case("token-bad-byte-ctl", "compressctl flags")
def _():
    return run_compressctl(["list"], token_file=False, env_token=SUBMITTER_TOKEN[:3] + "\x07")


# Unknown job names.

@case("job-unknown-grpc", "gRPC GetJob")
def _():
    return call(ENV.compressd().jobs.GetJob, pb.GetJobRequest(name="jobs/0000000000000000"))


@case("job-bad-name-grpc", "gRPC GetJob")
def _():
    return call(ENV.compressd().jobs.GetJob, pb.GetJobRequest(name="job/x"))


@case("job-other-tenant-grpc", "gRPC GetJob")
def _():
    server = ENV.compressd()
    result = call(server.jobs.GetJob, pb.GetJobRequest(name=f"jobs/{server.ops_job}"))
    return result._replace(subs={"JOB": server.ops_job})


@case("job-unknown-cancel-grpc", "gRPC CancelJob")
def _():
    return call(ENV.compressd().jobs.CancelJob, pb.CancelJobRequest(name="jobs/0000000000000000"))


@case("job-unknown-watch-grpc", "gRPC WatchJob")
def _():
    return first_stream_error(ENV.compressd().jobs.WatchJob,
                              pb.WatchJobRequest(name="jobs/0000000000000000"))


@case("job-delete-queued-grpc", "gRPC DeleteJob")
def _():
    server = ENV.compressd()
    result = call(server.jobs.DeleteJob, pb.DeleteJobRequest(name=f"jobs/{server.ml_jobs[1]}"))
    return result._replace(subs={"JOB": server.ml_jobs[1]})


@case("artifact-unknown-grpc", "gRPC ReadArtifact")
def _():
    server = ENV.compressd()
    name = f"jobs/{server.ml_jobs[0]}/artifacts/model.safetensors"
    return first_stream_error(server.jobs.ReadArtifact, pb.ReadArtifactRequest(name=name))._replace(
        subs={"JOB": server.ml_jobs[0]})


@case("job-unknown-ctl", "compressctl get")
def _():
    return run_compressctl(["get", "nosuchjob"])


@case("job-bad-name-ctl", "compressctl get")
def _():
    return run_compressctl(["get", "a/b"])


# Bad page tokens and page sizes.

@case("page-token-garbage", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(page_token="garbage"))


@case("page-token-other-filter", "gRPC ListJobs")
def _():
    server = ENV.compressd()
    first = server.jobs.ListJobs(pb.ListJobsRequest(page_size=1),
                                 metadata=bearer(SUBMITTER_TOKEN), timeout=20)
    if not first.next_page_token:
        return outcome(None, "the first page of two jobs has no next_page_token")
    return call(server.jobs.ListJobs, pb.ListJobsRequest(page_size=1, filter="state = QUEUED",
                                                         page_token=first.next_page_token))


@case("page-size-negative", "gRPC ListJobs")
def _():
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(page_size=-1))


@case("page-size-negative-ctl", "compressctl list")
def _():
    return run_compressctl(["list", "--page_size=-1"])


# Bad filters.

def list_filter(text):
    return call(ENV.compressd().jobs.ListJobs, pb.ListJobsRequest(filter=text))


@case("filter-unknown-state", "gRPC ListJobs")
def _():
    return list_filter("state = DONE")


@case("filter-too-many-labels", "gRPC ListJobs")
def _():
    return list_filter(" AND ".join(f'labels.k{i} = "v"' for i in range(1000)))


@case("filter-unknown-field", "gRPC ListJobs")
def _():
    return list_filter('owner = "me"')


@case("filter-or", "gRPC ListJobs")
def _():
    return list_filter("state = QUEUED OR state = FAILED")


@case("filter-unquoted", "gRPC ListJobs")
def _():
    return list_filter("labels.team = vision")


@case("filter-unterminated", "gRPC ListJobs")
def _():
    return list_filter('labels.team = "vision')


@case("filter-state-twice", "gRPC ListJobs")
def _():
    return list_filter("state = QUEUED AND state = FAILED")


@case("filter-ctl", "compressctl list")
def _():
    return run_compressctl(["list", "--filter", "state = DONE"])


# --------------------------------------------------------------------------------------------
# The tests.

GROUPS = {  # first word of the entry point -> test class, default exit status
    "compressctl": ("CompressctlTest", 1),
    "gRPC": ("GrpcTest", None),
    "compress-run": ("CompressRunTest", 1),
    "compressd": ("CompressdFlagsTest", 1),
}


def substitute(text, subs):
    for key in sorted(subs, key=len, reverse=True):
        text = text.replace("$" + key, subs[key])
    return text


def make_test(row):
    def test(self):
        entry, fn = CASES[row.case]
        self.assertEqual(row.entry, entry,
                         f"{ARGS.doc}:{row.line}: case {row.case} enters at {entry!r}")
        result = fn()
        subs = {"TMP": ENV.tmp, "ROOT": ENV.root}
        subs.update(result.subs)
        expected = substitute(row.message, subs)
        where = f"{ARGS.doc}:{row.line} ({row.case})"
        self.assertEqual(result.code, row.code,
                         f"{where}: code; message: {result.message!r}")
        self.assertIn(expected, result.message, f"{where}: message")
        exit_status = row.exit if row.exit is not None else GROUPS[entry.split()[0]][1]
        self.assertEqual(result.exit, exit_status, f"{where}: exit status; {result.message!r}")
    return test


class TableTest(unittest.TestCase):
    """The document and CASES name the same cases, once each."""

    def test_every_row_has_a_case_and_every_case_a_row(self):
        rows = parse_rows(ARGS.doc)
        ids = [row.case for row in rows]
        self.assertEqual(sorted(set(ids)), sorted(ids), "a case id appears twice in the document")
        self.assertEqual(sorted(set(ids) - set(CASES)), [], "rows without a case in the test")
        self.assertEqual(sorted(set(CASES) - set(ids)), [], "cases without a row in the document")

    def test_every_row_names_a_known_entry_point_and_a_code(self):
        for row in parse_rows(ARGS.doc):
            self.assertIn(row.entry.split()[0], GROUPS, f"line {row.line}: {row.entry}")
            if row.entry.split()[0] in ("gRPC", "compress-run"):
                self.assertIsNotNone(row.code, f"line {row.line}: no status code")


def build_test_classes():
    classes = {name: {} for name, _ in GROUPS.values()}
    for row in parse_rows(ARGS.doc):
        group = row.entry.split()[0]
        if group not in GROUPS or row.case not in CASES:
            continue  # TableTest reports it
        classes[GROUPS[group][0]][f"test_{row.case.replace('-', '_')}"] = make_test(row)
    for name, methods in classes.items():
        globals()[name] = type(name, (unittest.TestCase,), methods)


def setUpModule():
    global ENV
    ENV = Env()


def tearDownModule():
    if ENV is not None:
        if ENV.server is not None and os.environ.get("COMPRESSD_TEST_SHOW_LOG"):
            sys.stderr.write(ENV.server.read_log())
        ENV.close()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--compressd", required=True)
    parser.add_argument("--compressctl", required=True)
    parser.add_argument("--compress_run", required=True)
    parser.add_argument("--doc", default=os.path.join(REPO, "docs", "bad-input.md"))
    ARGS, rest = parser.parse_known_args()
    build_test_classes()
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False)
    if program.result.testsRun == 0:
        sys.stderr.write("no test selected\n")
        sys.exit(1)
    sys.exit(0 if program.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
