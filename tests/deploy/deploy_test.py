#!/usr/bin/python3
"""Checks of deploy/ against the real binaries.

- promtool check config / check rules on deploy/prometheus/;
- the Grafana dashboard parses, and every metric its queries name is one a live compressd
  exports (compressd started here on loopback, with a local compress-worker running a job
  through a stand-in executor, so that the per-device gauges exist too);
- the Kubernetes and Compose YAML parses, and every binary, flag and port in it exists;
  `kubectl kustomize` renders deploy/k8s (when kubectl is installed);
- Debian's prometheus, started on loopback with the shipped configuration and alert rules,
  scrapes compressd; its HTTP API answers a compressd metric after a job, evaluates every
  dashboard query, and has loaded every alert rule.

Usage: deploy_test.py --source_dir=DIR --compressd=BIN --worker=BIN --ctl=BIN [unittest args]
Exits 77 (ctest SKIP_RETURN_CODE) when every test selected was skipped.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import yaml

ARGS = None
PROGRAMS = ("compressd", "compress-worker", "compress-run", "compressctl")
METRIC_RE = re.compile(r"\b((?:compressd|grpc_server)_[a-z0-9_]+)\b")
# A job spec the server accepts (the stand-in executor ignores it).
SPEC = {"dataset": {"format": "synthetic"}, "teacher": {"train": {"epochs": 1}}}

# The stand-in executor: the event lines of a job with one phase and device readings; it waits
# for RELEASE to exist (at most 60 s) before finishing, so that the test can scrape meanwhile.
FAKE_EXECUTOR = r"""#!/usr/bin/python3
import hashlib, json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
work = args["--workdir"]
os.makedirs(work, exist_ok=True)
def emit(**event):
    event["time"] = time.time()
    print(json.dumps(event), flush=True)
emit(type="phase_started", phase="teacher")
emit(type="metric", phase="teacher", step=1, epoch=0.5, progress=0.5,
     values={"loss": 0.5, "images_per_second": 640.0, "device_memory_bytes": 123456789.0})
deadline = time.time() + 60
while not os.path.exists(RELEASE) and time.time() < deadline:
    time.sleep(0.1)
emit(type="phase_finished", phase="teacher", wall_seconds=3.5, values={"top1": 0.5})
data = b"weights" * 1000
path = os.path.join(work, "model.bin")
with open(path, "wb") as f:
    f.write(data)
emit(type="artifact", name="model.bin", path=path, sha256=hashlib.sha256(data).hexdigest(),
     size_bytes=len(data))
report = {"top1": 0.5}
with open(os.path.join(work, "report.json"), "w") as f:
    json.dump(report, f)
emit(type="report", report=report)
"""


def deploy_path(*parts):
    return os.path.join(ARGS.source_dir, "deploy", *parts)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(what, check, timeout):
    """Calls check() until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def parse_exposition(text):
    """{'name{labels}': value} of every sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples


def sample_names(samples):
    return {key.split("{", 1)[0] for key in samples}


def dashboard_queries():
    """(panel title, PromQL) of every target and variable query of the dashboard."""
    with open(deploy_path("grafana", "compressd.json")) as f:
        dashboard = json.load(f)
    queries = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            queries.append((variable["name"], variable["definition"]))
    return queries


def instantiate(expr):
    """A dashboard query with Grafana's variables replaced, for Prometheus's API."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace('=~"$job"', '=~".*"'))


def help_flags(binary):
    """The flags `binary --helpfull` lists."""
    result = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^\s+--([A-Za-z0-9_]+) ", result.stdout + result.stderr, re.M))


def flag_default_seconds(binary, flag):
    """The default of a duration flag of `binary --helpfull` (e.g. 1m, 5s, 1m30s), in seconds."""
    result = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=30)
    match = re.search(rf"^\s+--{flag} \(.*?\); default: ([^;]+);", result.stdout + result.stderr,
                      re.M | re.S)
    if match is None:
        raise AssertionError(f"{binary} --helpfull lists no default for --{flag}")
    seconds = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", match.group(1))
    if not parts or "".join(n + u for n, u in parts) != match.group(1):
        raise AssertionError(f"--{flag}: default {match.group(1)!r} is not a duration")
    return sum(float(number) * seconds[unit] for number, unit in parts)


def markdown_code_blocks(path):
    """The fenced code blocks of a Markdown file, each as its text."""
    with open(path) as f:
        return re.findall(r"^```[^\n]*\n(.*?)^```", f.read(), re.M | re.S)


def shell_words(command):
    """A shell command of a code block or comment: continuation lines joined, split into words."""
    return command.replace("\\\n", " ").split()


class Compressd:
    """compressd on loopback ports, with `local_workers` compress-workers whose executor is the
    stand-in above."""

    def __init__(self, tmp, local_workers=1, devices="cpu"):
        self.tmp = tmp
        self.release = os.path.join(tmp, "release")
        executor = os.path.join(tmp, "fake-compress-run")
        with open(executor, "w") as f:
            f.write(FAKE_EXECUTOR.replace("RELEASE", repr(self.release)))
        os.chmod(executor, 0o755)
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        if devices.startswith("cuda"):
            # The agent offers a cuda:N only when nvidia-smi lists that GPU: a stand-in that
            # lists one, first on PATH.
            bin_dir = os.path.join(tmp, "fake-bin")
            os.makedirs(bin_dir, exist_ok=True)
            smi = os.path.join(bin_dir, "nvidia-smi")
            with open(smi, "w") as f:
                f.write("#!/bin/sh\n"
                        "case \"$*\" in\n"
                        "*uuid*) echo '0, GPU-aaaa1111-0000, Fake GPU, 1024' ;;\n"
                        "*) echo '0, Fake GPU, 1024' ;;\n"
                        "esac\n")
            os.chmod(smi, 0o755)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        self.metrics_port = free_port()
        self.stderr = open(os.path.join(tmp, "compressd.stderr"), "w")
        self.process = subprocess.Popen(
            [ARGS.compressd, "--insecure", "--grpc_address=127.0.0.1:0",
             f"--metrics_address=127.0.0.1:{self.metrics_port}",
             f"--data_dir={os.path.join(tmp, 'data')}", f"--local_workers={local_workers}",
             f"--worker_binary={ARGS.worker}",
             f"--local_worker_flags=--devices={devices},--executor={executor},"
             "--lease_wait_seconds=5",
             "--sync_full=false"],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True,
            # cuda:N names the Nth GPU CUDA_VISIBLE_DEVICES lists when it is set; the worker
            # here is given the device without one.
            env=env)
        line = self.process.stdout.readline()
        match = re.match(r"compressd listening on (\S+):(\d+)", line)
        if not match:
            self.stop()
            raise AssertionError(f"compressd did not start: {line!r}; {self.stderr_text()}")
        self.grpc_address = f"127.0.0.1:{match.group(2)}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr.name) as f:
            return f.read()[-4000:]

    def scrape(self):
        return parse_exposition(http_get(self.metrics_url))

    def ctl(self, *args):
        return subprocess.run([ARGS.ctl, f"--server={self.grpc_address}", "--timeout=10s", *args],
                              capture_output=True, text=True, timeout=60)

    def run_job(self):
        """Submits a job; returns the scrape taken while it runs, after it succeeded."""
        spec = os.path.join(self.tmp, "spec.json")
        with open(spec, "w") as f:
            json.dump(SPEC, f)
        submitted = self.ctl("submit", spec)
        if submitted.returncode != 0:
            raise AssertionError(f"compressctl submit: {submitted.stdout}{submitted.stderr}")
        device = 'compressd_worker_device_memory_used_bytes{device="cpu",'
        running = wait_for("the job's device readings",
                           lambda: (lambda s: s if any(k.startswith(device) for k in s) else None)(
                               self.scrape()), 60)
        open(self.release, "w").close()
        wait_for("the job to succeed",
                 lambda: self.scrape().get('compressd_jobs_finished_total{state="SUCCEEDED"}') == 1,
                 60)
        return running

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


class DeployTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="compressd-deploy-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def start_compressd(self, devices="cpu", tmp=None):
        server = Compressd(tmp or self.tmp, devices=devices)
        self.addCleanup(server.stop)
        return server

    def require(self, program):
        path = shutil.which(program)
        if path is None:
            self.skipTest(f"{program} not installed (Debian package prometheus)")
        return path

    def test_promtool_check_config_and_rules(self):
        promtool = self.require("promtool")
        for args in (["check", "config", deploy_path("prometheus", "prometheus.yml")],
                     ["check", "rules", deploy_path("prometheus", "alerts.yml")]):
            result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, f"promtool {' '.join(args)}:\n"
                             f"{result.stdout}{result.stderr}")
        with open(deploy_path("prometheus", "alerts.yml")) as f:
            alerts = {rule["alert"] for group in yaml.safe_load(f)["groups"]
                      for rule in group["rules"]}
        for wanted in ("CompressdDown", "CompressdTargetMissing", "CompressdQueueStuck",
                       "CompressdNoWorkers", "CompressdJobFailureRate", "CompressdWorkerLost"):
            self.assertIn(wanted, alerts)
        # The KEDA trigger's query is PromQL promtool accepts (as a recording rule's expression).
        with open(deploy_path("k8s", "keda-scaledobject.yaml")) as f:
            query = yaml.safe_load(f)["spec"]["triggers"][0]["metadata"]["query"]
        keda_rules = os.path.join(self.tmp, "keda-query.yml")
        with open(keda_rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "keda", "rules": [
                {"record": "compress_worker:keda_query", "expr": query}]}]}, f)
        result = subprocess.run([promtool, "check", "rules", keda_rules], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(result.returncode, 0,
                         f"KEDA query {query!r}:\n{result.stdout}{result.stderr}")

    def test_promtool_test_rules(self):
        """tests/deploy/alerts_test.yml: when the alerts fire (busy workers are not a stuck queue,
        an idle one with a job never leased is; a scraped target that fails is down, a target
        that vanished is missing)."""
        promtool = self.require("promtool")
        tests = os.path.join(ARGS.source_dir, "tests", "deploy", "alerts_test.yml")
        result = subprocess.run([promtool, "test", "rules", tests], capture_output=True,
                                text=True, timeout=120)
        self.assertEqual(result.returncode, 0,
                         f"promtool test rules:\n{result.stdout}{result.stderr}")
        with open(tests) as f:
            tested = {case["alertname"] for test in yaml.safe_load(f)["tests"]
                      for case in test.get("alert_rule_test", [])}
        for wanted in ("CompressdQueueStuck", "CompressdDown", "CompressdTargetMissing"):
            self.assertIn(wanted, tested)

    def test_dashboard_names_exported_metrics(self):
        queries = dashboard_queries()
        self.assertGreater(len(queries), 10)
        server = self.start_compressd()
        running = server.run_job()
        exported = sample_names(running) | sample_names(server.scrape())
        for title, expr in queries:
            names = METRIC_RE.findall(expr)
            self.assertTrue(names, f"panel {title!r}: no compressd metric in {expr!r}")
            for name in names:
                self.assertIn(name, exported, f"panel {title!r}: {name} is not exported")
        # Rules too: every metric the alerts use is exported.
        with open(deploy_path("prometheus", "alerts.yml")) as f:
            for group in yaml.safe_load(f)["groups"]:
                for rule in group["rules"]:
                    for name in METRIC_RE.findall(rule["expr"]):
                        self.assertIn(name, exported, f"alert {rule['alert']}: {name}")
        # The job moved the families the dashboard shows.
        after = server.scrape()
        self.assertEqual(after["compressd_jobs_created_total"], 1)
        self.assertEqual(after['compressd_phase_duration_seconds_count{phase="teacher"}'], 1)
        self.assertEqual(after["compressd_artifact_bytes_received_total"], 7000)
        throughput = [value for key, value in running.items()
                      if key.startswith('compressd_train_images_per_second{device="cpu",')]
        self.assertEqual(throughput, [640])
        memory = [value for key, value in running.items()
                  if key.startswith('compressd_worker_device_memory_used_bytes{device="cpu",')]
        self.assertEqual(memory, [123456789])

    def test_compose_quickstart_job_runs_on_the_stack_workers(self):
        """The job docs/deploy.md's Compose quick-start submits is leased and finishes on what the
        stack's worker offers: its GPUs (cuda:0, the GPU worker's --devices=auto with one GPU)
        and cpu (the CPU-only variant). compressd gives cpu jobs to cpu devices only, so a spec
        saying cpu would stay QUEUED on the GPU worker."""
        blocks = [block for block in markdown_code_blocks(os.path.join(ARGS.source_dir, "docs",
                                                                       "deploy.md"))
                  if "docker compose -f deploy/compose/compose.yaml up" in block]
        self.assertEqual(len(blocks), 1, "the Compose quick-start of docs/deploy.md")
        words = shell_words(blocks[0])
        spec_path = os.path.join(ARGS.source_dir, words[words.index("submit") + 1])
        with open(spec_path) as f:
            spec = json.load(f)
        # It is the tiny example, but for the device.
        with open(os.path.join(ARGS.source_dir, "client", "examples",
                               "tiny-synthetic-job.json")) as f:
            example = json.load(f)
        example.get("resources", {}).pop("device", None)
        device = spec.get("resources", {}).pop("device", "auto")
        self.assertEqual(spec, example, f"{spec_path} and client/examples/"
                         "tiny-synthetic-job.json differ in more than resources.device")
        self.assertEqual(device, "auto", spec_path)
        with open(deploy_path("compose", "compose.yaml")) as f:
            worker = yaml.safe_load(f)["services"]["worker"]
        self.assertIn("--devices=auto", worker["command"])
        for devices in ("cuda:0", "cpu"):
            with self.subTest(devices=devices):
                server = self.start_compressd(devices=devices,
                                              tmp=tempfile.mkdtemp(dir=self.tmp))
                open(server.release, "w").close()  # the stand-in executor finishes at once
                submitted = server.ctl("submit", spec_path)
                self.assertEqual(submitted.returncode, 0, submitted.stdout + submitted.stderr)
                try:
                    wait_for(f"the quick-start job to succeed on a worker offering {devices}",
                             lambda: server.scrape().get(
                                 'compressd_jobs_finished_total{state="SUCCEEDED"}') == 1, 60)
                except AssertionError as e:
                    self.fail(f"{e}\n{server.ctl('list').stdout}\n{server.stderr_text()}")
                server.stop()

    def test_manifests_parse_and_use_real_flags(self):
        flags = {"compressd": help_flags(ARGS.compressd), "compress-worker": help_flags(ARGS.worker),
                 "compressctl": help_flags(ARGS.ctl)}
        for program, found in flags.items():
            self.assertIn("flagfile", found, f"{program} --helpfull listed no flags")
        ports = {"grpc_address": set(), "metrics_address": set()}
        documents = []
        for path in sorted(glob.glob(deploy_path("k8s", "*.yaml")) +
                           [deploy_path("compose", "compose.yaml")]):
            with open(path) as f:
                for document in yaml.safe_load_all(f):
                    self.assertIsInstance(document, dict, path)
                    documents.append((path, document))
        with open(deploy_path("k8s", "kustomization.yaml")) as f:
            kustomization = yaml.safe_load(f)
        for resource in kustomization["resources"]:
            self.assertTrue(os.path.exists(deploy_path("k8s", resource)), resource)
        image_names = {image["name"] for image in kustomization["images"]}

        commands = []  # (where, argv, container ports)
        for path, document in documents:
            if "services" in document:  # compose
                for name, service in document["services"].items():
                    command = service.get("command")
                    if isinstance(command, list) and command and command[0] in PROGRAMS:
                        commands.append((f"{path}:{name}", command, None))
                    test = service.get("healthcheck", {}).get("test", [])
                    if test[:1] == ["CMD"] and test[1] in PROGRAMS:
                        commands.append((f"{path}:{name} healthcheck", test[1:], None))
                continue
            template = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in template.get("containers", []):
                where = f"{path}:{container['name']}"
                self.assertIn(container["image"].split(":")[0], image_names, where)
                argv = container.get("command", []) + container.get("args", [])
                self.assertIn(argv[0], PROGRAMS, where)
                commands.append((where, argv, {p["name"]: p["containerPort"]
                                               for p in container.get("ports", [])}))
        self.assertGreaterEqual(len(commands), 4)
        for where, argv, container_ports in commands:
            program = argv[0]
            for arg in argv[1:]:
                if not arg.startswith("--"):
                    continue
                name, _, value = arg[2:].partition("=")
                self.assertIn(name, flags[program], f"{where}: {program} has no flag --{name}")
                if name in ports:
                    port = int(value.rpartition(":")[2])
                    ports[name].add(port)
                    if container_ports is not None:
                        self.assertIn(port, container_ports.values(), f"{where}: {arg}")
        self.assertEqual(ports, {"grpc_address": {50051}, "metrics_address": {9464}})

        # The Service, the ServiceMonitor and KEDA point at what exists.
        kinds = {document["kind"]: document for _, document in documents if "kind" in document}
        service_ports = {p["name"]: p["port"] for p in kinds["Service"]["spec"]["ports"]}
        self.assertEqual(service_ports, {"grpc": 50051, "metrics": 9464})
        self.assertEqual(kinds["ServiceMonitor"]["spec"]["endpoints"][0]["port"], "metrics")
        worker_args = " ".join(kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"])
        self.assertIn(f"--server={kinds['Service']['metadata']['name']}:50051", worker_args)
        limits = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        self.assertEqual(limits["nvidia.com/gpu"], 1)
        trigger = kinds["ScaledObject"]["spec"]["triggers"][0]
        query = trigger["metadata"]["query"]
        # Every series the query reads is selected by this deployment's namespace and scrape job
        # (the ServiceMonitor's job label is the Service's name), so that another compressd
        # scraped by the same Prometheus does not scale these workers.
        self.assertNotIn("jobLabel", kinds["ServiceMonitor"]["spec"])
        selectors = re.findall(r"\b(compressd_[a-z_]+)\s*(\{[^}]*\})?", query)
        self.assertEqual(sorted({name for name, _ in selectors}),
                         ["compressd_jobs", "compressd_jobs_queued"], query)
        for name, selector in selectors:
            matchers = dict(re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', selector))
            self.assertEqual(matchers.get("namespace"), kustomization["namespace"],
                             f"KEDA query: {name}{selector} is not selected by namespace")
            self.assertEqual(matchers.get("job"), kinds["Service"]["metadata"]["name"],
                             f"KEDA query: {name}{selector} is not selected by scrape job")
            # GPU workers scale on the jobs a GPU can take, not on cpu jobs they never lease.
            if name == "compressd_jobs_queued":
                self.assertEqual(matchers.get("device"), "cuda|auto", selector)
            else:
                self.assertEqual(matchers.get("state"), "RUNNING|CANCELLING", selector)
        # An empty answer (compressd's series gone: its target is down) is an error, on which
        # KEDA keeps the replicas, rather than 0, which would scale busy workers to zero.
        self.assertEqual(trigger["metadata"].get("ignoreNullValues"), "false")
        self.assertNotIn("fallback", kinds["ScaledObject"]["spec"])
        self.assertEqual(kinds["ScaledObject"]["spec"]["scaleTargetRef"]["name"],
                         kinds["Deployment"]["metadata"]["name"])
        statefulset = kinds["StatefulSet"]["spec"]
        mount = statefulset["template"]["spec"]["containers"][0]["volumeMounts"][0]
        self.assertEqual(mount["name"], statefulset["volumeClaimTemplates"][0]["metadata"]["name"])
        self.assertIn(f"--data_dir={mount['mountPath']}",
                      statefulset["template"]["spec"]["containers"][0]["command"])

    def test_manifests_secure_the_grpc_port(self):
        """compressd in compose and k8s serves TLS with bearer tokens (never --insecure), the
        workers present a token, workers and the healthcheck verify the server, and every file those
        flags name lies in a mounted secret."""
        file_flags = ("token_file", "tls_cert", "tls_key", "tls_ca", "tls_client_ca")
        wanted = {"compressd": {"token_file", "tls_cert", "tls_key"},
                  "compress-worker": {"token_file", "tls_ca"},
                  "compressctl": {"tls_ca"}}
        checked = []

        def check(where, argv, secret_dirs):
            flags = dict(arg[2:].partition("=")[::2] for arg in argv[1:] if arg.startswith("--"))
            self.assertNotIn("insecure", flags, where)
            self.assertNotIn("insecure_allow_remote", flags, where)
            self.assertLessEqual(wanted[argv[0]], set(flags), where)
            for name in file_flags:
                if name in flags:
                    self.assertTrue(any(flags[name].startswith(d + "/") for d in secret_dirs),
                                    f"{where}: --{name}={flags[name]} is not in a mounted secret "
                                    f"({sorted(secret_dirs)})")
            checked.append(argv[0])

        with open(deploy_path("compose", "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        for name, service in compose["services"].items():
            # A compose secret mounts as the file /run/secrets/NAME.
            secret_files = {f"/run/secrets/{secret}" for secret in service.get("secrets", [])}
            for secret in service.get("secrets", []):
                self.assertIn(secret, compose.get("secrets", {}), f"compose:{name}")
            command = service.get("command")
            argv_list = []
            if isinstance(command, list) and command and command[0] in PROGRAMS:
                argv_list.append(command)
            test = service.get("healthcheck", {}).get("test", [])
            if test[:1] == ["CMD"] and test[1] in PROGRAMS:
                argv_list.append(test[1:])
            for argv in argv_list:
                flags = dict(a[2:].partition("=")[::2] for a in argv[1:] if a.startswith("--"))
                for flag in file_flags:
                    if flag in flags:
                        self.assertIn(flags[flag], secret_files, f"compose:{name}: --{flag}")
                check(f"compose:{name}", argv, {"/run/secrets"})

        for path in glob.glob(deploy_path("k8s", "*.yaml")):
            with open(path) as f:
                for document in yaml.safe_load_all(f):
                    spec = document.get("spec", {}).get("template", {}).get("spec", {})
                    secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
                    for container in spec.get("containers", []):
                        dirs = {m["mountPath"] for m in container.get("volumeMounts", [])
                                if m["name"] in secret_volumes}
                        argv = container.get("command", []) + container.get("args", [])
                        check(f"{path}:{container['name']}", argv, dirs)
        self.assertEqual(sorted(checked), ["compress-worker", "compress-worker", "compressctl",
                                           "compressd", "compressd"])

    def test_dockerfile_stages_and_commands(self):
        """The Dockerfile's stages are the ones compose and docs/deploy.md build (the default
        target is the CPU image), the CUDA stage builds the pipeline half alone, both runtime
        images run as a non-root user, and every command the images run (CMD, HEALTHCHECK, the
        local worker's flags) uses a real program and real flags."""
        with open(os.path.join(ARGS.source_dir, "Dockerfile")) as f:
            text = f.read()
        lines = []  # instructions, continuation lines joined, comments dropped
        pending = ""
        for line in text.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
        self.assertEqual(pending, "", "Dockerfile ends inside a continuation")
        stages = []  # (name or None, base, [instructions])
        for line in lines:
            words = line.split()
            if words[0].upper() == "FROM":
                name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else None
                stages.append((name, words[1], []))
            else:
                self.assertTrue(stages, f"instruction before FROM: {line}")
                stages[-1][2].append(line)
        names = [name for name, _, _ in stages if name]
        self.assertEqual(names, ["build", "cpu", "executor-cuda", "worker-cuda"])
        self.assertEqual(stages[-1][1], "cpu", "the default target must be the CPU image")
        by_name = {name: (base, body) for name, base, body in stages if name}
        self.assertEqual(by_name["worker-cuda"][0], "cpu")
        cuda_build = " ".join(by_name["executor-cuda"][1])
        self.assertIn("-DCOMPRESS_BUILD_SERVICE=OFF", cuda_build)
        self.assertIn("--target compress-run", cuda_build)
        for body in (by_name["cpu"][1], by_name["worker-cuda"][1]):
            users = [l.split()[1] for l in body if l.split()[0].upper() == "USER"]
            self.assertTrue(users and users[-1] != "root", f"runs as {users}")

        def instructions(stage, keyword):
            """The arguments of `keyword` in a stage and the stages it is built on, nearest
            last."""
            base, body = by_name[stage]
            found = instructions(base, keyword) if base in by_name else []
            return found + [l.partition(" ")[2] for l in body if l.split()[0].upper() == keyword]

        # tini is PID 1 of both runtime images: it forwards signals to the command and reaps the
        # processes orphaned in the container (the executors of a crashed local worker).
        for stage in ("cpu", "worker-cuda"):
            entrypoint = instructions(stage, "ENTRYPOINT")
            self.assertTrue(entrypoint, f"{stage}: no ENTRYPOINT")
            self.assertEqual(json.loads(entrypoint[-1]), ["/usr/bin/tini", "--"], stage)
        install = [l for l in by_name["cpu"][1] if "apt-get install" in l]
        self.assertIn("tini", " ".join(install).split(), "the cpu stage does not install tini")

        # The header's `docker run` of the default command gives the local worker its stop
        # grace, keeps the metrics port on loopback and the data dir on a volume, as
        # docs/deploy.md does.
        header = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            header.append(line[1:].strip())
        start = next(i for i, line in enumerate(header) if line.startswith("docker run "))
        end = start
        while header[end].endswith("\\"):
            end += 1
        words = shell_words("\n".join(header[start:end + 1]))
        options = {}
        for option, value in zip(words, words[1:]):
            if option.startswith("-") and not value.startswith("-"):
                options.setdefault(option, []).append(value)
        cmd = json.loads(instructions("cpu", "CMD")[-1])
        cmd_flags = dict(a[2:].partition("=")[::2] for a in cmd[1:] if a.startswith("--"))
        self.assertIn("local_workers", cmd_flags)
        grace = sum(flag_default_seconds(ARGS.compressd, flag)
                    for flag in ("local_worker_stop_grace", "shutdown_grace")
                    if flag not in cmd_flags)
        self.assertGreater(int(options.get("--stop-timeout", ["0"])[0]), grace,
                           f"docker run {' '.join(words[2:])}: --stop-timeout")
        published = options.get("-p", [])
        self.assertTrue(any(p.endswith(":9464") for p in published), published)
        for port in published:
            if port.endswith(":9464"):
                self.assertTrue(port.startswith("127.0.0.1:"), f"metrics published on {port}")
        volumes = [v for v in options.get("-v", []) if v.split(":")[1] == "/var/lib/compressd"]
        self.assertTrue(volumes, "no volume on /var/lib/compressd (the data dir)")
        documented = [shell_words(block) for block in
                      markdown_code_blocks(os.path.join(ARGS.source_dir, "docs", "deploy.md"))
                      if block.startswith("docker run ")]
        self.assertIn(words, documented, "docs/deploy.md shows another `docker run`")

        with open(deploy_path("compose", "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        images = {"compressd": "cpu", "compressd-worker-cuda": "worker-cuda"}
        for name, service in compose["services"].items():
            target = service.get("build", {}).get("target")
            if target is not None:
                self.assertIn(target, names, f"compose:{name} builds target {target}")
            else:
                target = images.get(service.get("image", "").split(":")[0])
            command = service.get("command") or []
            # A worker serves no port: one run from an image whose HEALTHCHECK asks compressd on
            # the container's own port (the cpu image) would never be healthy.
            if command[:1] == ["compress-worker"] and target is not None:
                image_check = instructions(target, "HEALTHCHECK")
                if image_check and image_check[-1].strip().upper() != "NONE":
                    self.assertTrue(service.get("healthcheck", {}).get("disable"),
                                    f"compose:{name}: the {target} image's HEALTHCHECK cannot "
                                    "pass in a worker container: healthcheck: {disable: true}")
            # Docker fills a GPU reservation's count with GPUs 0 to count-1 in every container,
            # so a counted reservation is all GPUs (one agent offers each) or explicit ids.
            reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
            for device in reservations.get("devices", []):
                self.assertTrue(device.get("count") == "all" or device.get("device_ids"),
                                f"compose:{name}: GPU reservation {device}")

        flags = {"compressd": help_flags(ARGS.compressd), "compress-worker": help_flags(ARGS.worker),
                 "compressctl": help_flags(ARGS.ctl)}
        commands = []
        for name, _, body in stages:
            for line in body:
                keyword, _, rest = line.partition(" ")
                if keyword.upper() == "CMD":
                    commands.append((f"{name} CMD", json.loads(rest)))
                elif keyword.upper() == "HEALTHCHECK" and " CMD " in f" {rest} ":
                    commands.append((f"{name} HEALTHCHECK", rest.split(" CMD ", 1)[1].split()))
        self.assertGreaterEqual(len(commands), 3)
        for where, argv in commands:
            self.assertIn(argv[0], flags, where)
            for arg in argv[1:]:
                if not arg.startswith("--"):
                    continue
                flag, _, value = arg[2:].partition("=")
                self.assertIn(flag, flags[argv[0]], f"{where}: {argv[0]} has no flag --{flag}")
                if flag == "local_worker_flags":
                    for worker_arg in value.split(","):
                        worker_flag = worker_arg[2:].partition("=")[0]
                        self.assertIn(worker_flag, flags["compress-worker"],
                                      f"{where}: compress-worker has no flag --{worker_flag}")
        healthchecks = [argv for where, argv in commands if "HEALTHCHECK" in where]
        self.assertEqual([argv[-1] for argv in healthchecks], ["health"])

    def test_kustomize_build(self):
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.skipTest("kubectl not installed")
        result = subprocess.run([kubectl, "kustomize", deploy_path("k8s")], capture_output=True,
                                text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        documents = list(yaml.safe_load_all(result.stdout))
        kinds = sorted(document["kind"] for document in documents)
        self.assertEqual(kinds, ["Deployment", "Namespace", "ScaledObject", "Service",
                                 "ServiceMonitor", "StatefulSet"])
        for document in documents:
            if document["kind"] != "Namespace":
                self.assertEqual(document["metadata"]["namespace"], "compressd")

    def test_prometheus_scrapes_compressd(self):
        prometheus = self.require("prometheus")
        server = self.start_compressd()
        with open(deploy_path("prometheus", "prometheus.yml")) as f:
            config = yaml.safe_load(f)
        # The shipped configuration, pointed at this compressd and scraping every second.
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [deploy_path("prometheus", rule) for rule in config["rule_files"]]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "compressd")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
        config_path = os.path.join(self.tmp, "prometheus.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        port = free_port()
        log = open(os.path.join(self.tmp, "prometheus.log"), "w")
        process = subprocess.Popen(
            [prometheus, f"--config.file={config_path}",
             f"--storage.tsdb.path={os.path.join(self.tmp, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

        self.addCleanup(stop)
        api = f"http://127.0.0.1:{port}/api/v1"

        def query(expr):
            answer = json.loads(http_get(f"{api}/query?" + urllib.parse.urlencode({"query": expr})))
            if answer["status"] != "success":
                raise AssertionError(f"{expr}: {answer}")
            return answer["data"]["result"]

        wait_for("prometheus to be ready",
                 lambda: http_get(f"http://127.0.0.1:{port}/-/ready").startswith("Prometheus"), 60)
        server.run_job()
        result = wait_for("compressd_jobs_created_total in prometheus",
                          lambda: [r for r in query("compressd_jobs_created_total")
                                   if float(r["value"][1]) == 1], 60)
        self.assertEqual(result[0]["metric"]["job"], "compressd")
        wait_for("the finished job in prometheus",
                 lambda: query('compressd_jobs_finished_total{state="SUCCEEDED"} == 1'), 60)
        # Every dashboard query is valid PromQL to this Prometheus.
        for title, expr in dashboard_queries():
            if expr.startswith("label_values("):
                continue
            try:
                query(instantiate(expr))
            except (AssertionError, urllib.error.HTTPError) as e:
                self.fail(f"panel {title!r}: {e}")
        # Every alert rule was loaded.
        rules = json.loads(http_get(f"{api}/rules"))["data"]["groups"]
        loaded = {rule["name"] for group in rules for rule in group["rules"]}
        with open(deploy_path("prometheus", "alerts.yml")) as f:
            shipped = {rule["alert"] for group in yaml.safe_load(f)["groups"]
                       for rule in group["rules"]}
        self.assertEqual(loaded, shipped)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--compressd", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--ctl", required=True)
    ARGS, rest = parser.parse_known_args()
    program = unittest.main(argv=[sys.argv[0], *rest], exit=False, verbosity=2)
    result = program.result
    if result.testsRun > 0 and len(result.skipped) == result.testsRun:
        sys.exit(77)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
