#!/bin/bash
# In-guest: a named subset of tests/e2e against the guest's own dockerd (kernel, systemd, cgroup v2,
# docker.io of the release). The tests start their own `pylog serve` processes (tests/e2e/conftest.py);
# pylog and the test runner come from the share's wheelhouse (no index). Exits with pytest's code.
set -uo pipefail
share="$(cd "$(dirname "$0")" && pwd)"
echo "uptime at start: $(cut -d' ' -f1 /proc/uptime) s"
echo "== $(uname -r), Debian $(cat /etc/debian_version), docker $(docker version --format '{{.Server.Version}}')," \
     "cgroup $(docker info --format '{{.CgroupVersion}} {{.CgroupDriver}}'), $(python3 --version)"
mapfile -t tests <"$share/e2e-tests"
read -r -a extra <"$share/e2e-args" || true

# What scripts/setup-host.sh --for-tests installs and these tests use: busybox-static is in the
# image; the syslog tests need rsyslog, its GnuTLS driver and openssl (from the mirror, via NAT).
packages=()
if printf '%s\n' "${tests[@]}" | grep -q syslog; then
  command -v rsyslogd >/dev/null || packages+=(rsyslog)
  dpkg -s rsyslog-gnutls >/dev/null 2>&1 || packages+=(rsyslog-gnutls)
  command -v openssl >/dev/null || packages+=(openssl)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  echo "== apt-get install ${packages[*]}"
  t=$(date +%s)
  # policy-rc.d: the tests run their own private rsyslogd, the package's service stays off.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${packages[@]}"; } >/tmp/apt.log 2>&1 \
    || { tail -n 20 /tmp/apt.log; exit 1; }
  rm -f /usr/sbin/policy-rc.d
  echo "   $(( $(date +%s) - t )) s"
fi

echo "== venv /opt/e2e (--no-index)"
t=$(date +%s)
python3 -m venv /opt/e2e
/opt/e2e/bin/pip install -q --disable-pip-version-check --no-index \
  --find-links "$share/wheelhouse/deps" --find-links "$share/wheelhouse/pylog" \
  --find-links "$share/wheelhouse/test" pylog -r "$share/wheelhouse/test-requirements.txt" || exit 1
echo "   $(( $(date +%s) - t )) s"
/opt/e2e/bin/pip list --disable-pip-version-check --format=freeze | tr '\n' ' '; echo

# A local copy: the tests write next to nothing here, but 9p is slow and pytest walks the tree.
cp -r "$share/src" /root/src
cd /root/src
echo "== pytest ${tests[*]} ${extra[*]}"
t=$(date +%s)
# The unit tests among them run under TCG, ten times slower than the host: the lane checks the
# kernel, distro and Docker, while the 0.1 s slow-callback limit is held on the host's run.
PYLOG_SLOW_CALLBACK=1.0 \
PYLOG_REQUIRE_DOCKER=1 PYLOG_ARTIFACTS="$share/out/artifacts" /opt/e2e/bin/python -m pytest \
  "${tests[@]}" "${extra[@]}" -ra -p no:cacheprovider --durations=15 \
  --junitxml="$share/out/junit.xml"
rc=$?
echo "== pytest exited $rc after $(( $(date +%s) - t )) s; uptime $(cut -d' ' -f1 /proc/uptime) s"
exit $rc
