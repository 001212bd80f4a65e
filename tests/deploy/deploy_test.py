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


class Compressd:
    """compressd on loopback ports, with `local_workers` compress-workers whose executor is the
    stand-in above."""

    def __init__(self, tmp, local_workers=1):
        self.tmp = tmp
        self.release = os.path.join(tmp, "release")
        executor = os.path.join(tmp, "fake-compress-run")
        with open(executor, "w") as f:
            f.write(FAKE_EXECUTOR.replace("RELEASE", repr(self.release)))
        os.chmod(executor, 0o755)
        self.metrics_port = free_port()
        self.stderr = open(os.path.join(tmp, "compressd.stderr"), "w")
        self.process = subprocess.Popen(
            [ARGS.compressd, "--insecure", "--grpc_address=127.0.0.1:0",
             f"--metrics_address=127.0.0.1:{self.metrics_port}",
             f"--data_dir={os.path.join(tmp, 'data')}", f"--local_workers={local_workers}",
             f"--worker_binary={ARGS.worker}",
             f"--local_worker_flags=--devices=cpu,--executor={executor},--lease_wait_seconds=5",
             "--sync_full=false"],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True)
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

    def start_compressd(self):
        server = Compressd(self.tmp)
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
        for wanted in ("CompressdQueueStuck", "CompressdNoWorkers", "CompressdJobFailureRate",
                       "CompressdWorkerLost"):
            self.assertIn(wanted, alerts)

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
        # GPU workers scale on the jobs a GPU can take, not on cpu jobs they would never lease.
        query = trigger["metadata"]["query"]
        self.assertIn('compressd_jobs_queued{device=~"cuda|auto"}', query)
        self.assertNotIn('state="QUEUED"', query)
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

        with open(deploy_path("compose", "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        for name, service in compose["services"].items():
            target = service.get("build", {}).get("target")
            if target is not None:
                self.assertIn(target, names, f"compose:{name} builds target {target}")

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
