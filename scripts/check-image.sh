#!/usr/bin/env bash
# Builds the CPU image (Dockerfile target `cpu`) and checks it as docs/deploy.md says to run it:
# secrets made as in "Security" and mounted at /etc/compressd, the image's default command (TLS,
# bearer tokens, one local worker), its HEALTHCHECK, a small synthetic job submitted with the
# image's compressctl and a user token until SUCCEEDED, its artifacts downloaded with their
# sha256 checked, /metrics counting the job, the Python client importable, and tini as PID 1
# reaping an orphaned process.
#
#   scripts/check-image.sh [IMAGE_TAG]     # default compressd:check; needs docker and openssl
#   NO_BUILD=1 scripts/check-image.sh TAG  # checks an image built before
#
# Exits 0 when every check passes; otherwise prints the failing step and the container's log.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-compressd:check}"
docker="${DOCKER:-docker}"
name="compressd-check-$$"
secrets="$(mktemp -d)"
build_log="$(mktemp)"
cleanup() {
  "$docker" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$secrets" "$build_log"
}
trap cleanup EXIT
fail() {
  echo "check-image: $*" >&2
  "$docker" logs "$name" 2>&1 | tail -30 >&2 || true
  exit 1
}

if [ -z "${NO_BUILD:-}" ]; then
  echo "check-image: building $tag (--target cpu)"
  "$docker" build --target cpu -t "$tag" . >"$build_log" 2>&1 ||
    { tail -40 "$build_log" >&2; fail "docker build failed"; }
fi

echo "check-image: making secrets as docs/deploy.md (Security) does"
(
  cd "$secrets"
  chmod 755 .  # mktemp's 700 would keep the container's uid out
  openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.crt -days 825 \
    -subj /CN=compressd-ca
  openssl req -newkey rsa:3072 -nodes -keyout tls.key -out tls.csr -subj /CN=compressd
  printf 'subjectAltName=DNS:compressd,DNS:compressd.compressd.svc,DNS:localhost\n' > san.ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile san.ext -out tls.crt
  worker=$(openssl rand -hex 32)
  user=$(openssl rand -hex 32)
  printf '%s ops worker\n%s vision submitter\n' "$worker" "$user" > tokens
  echo "$worker" > worker-token
  echo "$user" > user-token
  chmod 644 tls.crt ca.crt
  chmod 600 ./*.key ./*token* tokens
  # The container's uid reads the private files it needs; user-token is read by compressctl
  # inside the container here, so it is handed over too (on a host it stays the user's).
  if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 tokens tls.key worker-token user-token
  else
    chmod 644 tokens tls.key worker-token user-token
  fi
) >/dev/null 2>&1 || fail "making the secrets failed (openssl)"

echo "check-image: starting the image's default command"
"$docker" run -d --name "$name" -v "$secrets:/etc/compressd:ro" \
  -v "$PWD/client/examples:/examples:ro" "$tag" >/dev/null || fail "docker run failed"

ctl() {
  "$docker" exec "$name" compressctl --server=127.0.0.1:50051 --tls_ca=/etc/compressd/ca.crt \
    --tls_server_name=compressd --token_file=/etc/compressd/user-token "$@"
}

for _ in $(seq 1 60); do
  if ctl --timeout=2s health >/dev/null 2>&1; then break; fi
  [ "$("$docker" inspect --format '{{.State.Running}}' "$name")" = true ] ||
    fail "compressd exited"
  sleep 1
done
[ "$(ctl health)" = SERVING ] || fail "compressctl health did not answer SERVING"

echo "check-image: PID 1 is tini and reaps orphaned processes"
[ "$("$docker" exec "$name" cat /proc/1/comm)" = tini ] || fail "PID 1 is not tini"
# The shell exits at once, leaving its `sleep` to PID 1, as a crashed local worker leaves its
# executor; once the sleep ends, PID 1 must reap it.
"$docker" exec "$name" sh -c 'sleep 1 & exit 0'
sleep 3
zombies="$("$docker" exec "$name" sh -c \
  'grep -l "^State:[[:space:]]*Z" /proc/[0-9]*/status 2>/dev/null || true')"
[ -z "$zombies" ] || fail "zombie processes in the container: $zombies"

echo "check-image: running client/examples/tiny-synthetic-job.json"
out="$(ctl --output=json submit /examples/tiny-synthetic-job.json --wait)" ||
  fail "the job did not succeed: $out"
job="$(printf '%s\n' "$out" | sed -n 's/.*"name": *"jobs\/\([^"]*\)".*/\1/p' | head -1)"
[ -n "$job" ] || fail "no job name in compressctl's answer: $out"
"$docker" exec "$name" mkdir -p /var/lib/compressd/download
ctl download "$job" -o /var/lib/compressd/download >/dev/null || fail "download of $job failed"
for artifact in model.safetensors config.json report.json; do
  "$docker" exec "$name" test -s "/var/lib/compressd/download/$artifact" ||
    fail "artifact $artifact was not downloaded"
done

metrics="$("$docker" exec "$name" python3 -c \
  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode())")"
printf '%s\n' "$metrics" | grep -q '^compressd_jobs_finished_total{state="SUCCEEDED"} 1' ||
  fail "/metrics does not count the finished job"

"$docker" exec "$name" python3 -c "import sys; sys.path.insert(0, '/opt/compressd/share/compressd/python'); import compressd_client" ||
  fail "the Python client does not import"

echo "check-image: waiting for the HEALTHCHECK (interval 30 s)"
health=""
for _ in $(seq 1 90); do
  health="$("$docker" inspect --format '{{.State.Health.Status}}' "$name")"
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || fail "the container's health is '$health', not healthy"

echo "check-image: $tag passed (job $job, artifacts downloaded, metrics, health check)"
