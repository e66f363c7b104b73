#!/bin/sh
# Installs a wallance .deb into a throwaway copy of this machine (an overlay
# of / in private mount, PID, network, UTS and IPC namespaces), boots
# systemd there as PID 1, and checks what docs/gateway.md says: the user and
# modes postinst makes, the hardened unit as systemd really runs it (user,
# seccomp, read-only contracts folder), an operator dropping a contract, a
# purchase served by the packaged node, the start conditions, upgrade,
# remove and purge. Nothing on the machine itself changes.
#
#   sudo packaging/debian/test-in-systemd.sh target/deb/dev/wallance_0.1.0_amd64.deb \
#       target/debug/build/wallance-*/out/espresso.wasm
#
# Needs root, overlayfs, and systemd, adduser and curl installed on this
# machine (a Debian one of the package's architecture). About 30 s.
set -eu

case "${1:-}" in
--prepare)
    # In the copy, before systemd boots: install, and play the network's
    # admin and a gateway's operator as docs/gateway.md tells them.
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
    # Container images forbid starting services during installs.
    rm -f /usr/sbin/policy-rc.d
    dpkg -i /x/wallance.deb >/x/dpkg-install.log 2>&1
    wallance init --nodes 2 --dir /root/net --loopback >/dev/null
    install -m 0644 /root/net/network.toml /etc/wallance/network.toml
    install -o wallance -g wallance -m 0600 /root/net/node-1/data/key /var/lib/wallance/key
    token=$(sed -n 's/^api_token = "\(.*\)"/\1/p' /root/net/node-1/node.toml)
    sed -i "s/^#api_token = .*/api_token = \"$token\"/; s/^#interfaces = \"all\"/interfaces = \"loopback\"/" \
        /etc/wallance/node.toml
    sed -i 's/^#\(\[\[devices\]\]\|name = \|kind = \|water_ml = \|beans_g = \|grant = \)/\1/' /etc/wallance/node.toml
    sed -i 's/^#\(commit_window_ms = \|checkpoint_s = \)/\1/' /etc/wallance/node.toml
    sed -i 's/^api_listen = .*/api_listen = "127.0.0.1:7071"/' /root/net/node-2/node.toml
    adduser --quiet --disabled-password --gecos '' alice
    adduser --quiet alice wallance
    su alice -s /bin/sh -c 'install -m 0644 /x/espresso.wasm /var/lib/wallance/contracts/.espresso.wasm.new &&
        mv /var/lib/wallance/contracts/.espresso.wasm.new /var/lib/wallance/contracts/espresso.wasm'
    cat >/etc/systemd/system/verify.service <<'UNIT'
[Unit]
After=multi-user.target wallance.service
[Service]
Type=oneshot
ExecStart=/x/test-in-systemd.sh --verify
StandardOutput=file:/x/verify.log
StandardError=inherit
ExecStopPost=/bin/systemctl --no-block start poweroff.target
UNIT
    mkdir -p /etc/systemd/system/multi-user.target.wants
    ln -sf /etc/systemd/system/verify.service /etc/systemd/system/multi-user.target.wants/
    systemctl mask systemd-logind.service getty@tty1.service console-getty.service \
        systemd-networkd.service systemd-resolved.service cron.service ssh.service >/dev/null 2>&1 || true
    exit 0
    ;;
--verify)
    # A unit in the booted copy: every check prints "ok" or "FAIL".
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
    exec 2>&1
    check() { # what, then a command that must succeed
        what=$1
        shift
        if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; fi
    }
    mode() { [ "$(stat -c '%A %U:%G' "$1")" = "$2" ]; }
    ip link set lo up
    check "postinst: user wallance, home /var/lib/wallance, no shell" \
        sh -c 'getent passwd wallance | grep -q ":/var/lib/wallance:/usr/sbin/nologin$"'
    check "/etc/wallance/node.toml root:wallance 0640" mode /etc/wallance/node.toml "-rw-r----- root:wallance"
    check "/var/lib/wallance wallance:wallance 0750" mode /var/lib/wallance "drwxr-x--- wallance:wallance"
    check "/var/lib/wallance/contracts root:wallance 2775" mode /var/lib/wallance/contracts \
        "drwxrwsr-x root:wallance"
    check "the unit is enabled" systemctl is-enabled wallance
    for _ in $(seq 1 30); do systemctl is-active --quiet wallance && break; sleep 1; done
    check "the unit runs" systemctl is-active wallance
    pid=$(systemctl show -p MainPID --value wallance)
    status=/proc/$pid/status
    check "it runs as wallance" grep -q "^Uid:[[:space:]]$(id -u wallance)[[:space:]]" "$status"
    check "no new privileges" grep -q "^NoNewPrivs:[[:space:]]1$" "$status"
    check "a seccomp filter" grep -q "^Seccomp:[[:space:]]2$" "$status"
    check "no capabilities" grep -q "^CapBnd:[[:space:]]0000000000000000$" "$status"
    as_service() {
        nsenter -t "$pid" -m -r -w setpriv --reuid "$(id -u wallance)" --regid "$(id -g wallance)" \
            --clear-groups sh -c "$1"
    }
    check "the service writes its data folder" as_service 'touch /var/lib/wallance/probe && rm /var/lib/wallance/probe'
    check "the service cannot write the contracts" as_service '! touch /var/lib/wallance/contracts/probe'
    check "the service reads the contracts" as_service 'cat /var/lib/wallance/contracts/espresso.wasm'
    check "the service cannot write /etc" as_service '! touch /etc/wallance/probe'
    check "the service cannot write /usr" as_service '! touch /usr/probe'
    check "the service cannot list /home" as_service '! ls /home'
    check "the operator cannot read the key" su alice -s /bin/sh -c '! cat /var/lib/wallance/key'
    check "the operator reads node.toml" su alice -s /bin/sh -c 'cat /etc/wallance/node.toml'
    check "other users cannot read node.toml" su nobody -s /bin/sh -c '! cat /etc/wallance/node.toml'
    su alice -s /bin/sh -c 'umask 077; cp /x/espresso.wasm /var/lib/wallance/contracts/private.wasm'
    sleep 1
    echo "     a contract only its owner can read: $(wallance status | grep 'private.wasm')"
    check "an unreadable contract is refused" sh -c \
        'wallance status | grep -q "private.wasm: REJECTED: cannot read .*Permission denied"'
    rm /var/lib/wallance/contracts/private.wasm
    /usr/bin/wallance node --config /root/net/node-2/node.toml 2>/tmp/node-2.log &
    node2=$!
    token2=$(sed -n 's/^api_token = "\(.*\)"/\1/p' /root/net/node-2/node.toml)
    for _ in $(seq 1 30); do wallance status --api http://127.0.0.1:7071 >/dev/null 2>&1 && break; sleep 1; done
    # node-2 needs 4 DCoin from its sensor shares (2 price, 2 reward).
    for _ in $(seq 1 30); do
        if wallance buy espresso --provider node-1 --price 2 --param size=lungo \
            --api http://127.0.0.1:7071 --token "$token2" >/tmp/buy.log 2>&1; then break; fi
        grep -q "(402)" /tmp/buy.log || break
        sleep 2
    done
    cat /tmp/buy.log
    check "the packaged node brewed the espresso" grep -q "brewed a 110 ml lungo" /tmp/buy.log
    curl -s http://127.0.0.1:7070/metrics >/x/metrics.txt
    # The names docs/gateway.md tells operators to watch ("# TYPE" names: a
    # counter's samples add _total). rejected_messages_total{reason} shows
    # with the first rejected message, none here.
    for m in dds_participants members quorum commits commit_latency_seconds pending_requests escrows_open \
        contract_invocations contract_failures contracts store_bytes uptime_seconds wallet_balance_units \
        dds_malformed_samples dds_send_failures store_syncs store_written_bytes store_commits; do
        check "/metrics has wallance_$m" grep -q "^# TYPE wallance_$m " /x/metrics.txt
    done
    kill "$node2"
    wait "$node2" || true
    check "the journal has the node's lines" sh -c 'journalctl -u wallance -o cat | grep -q "node started member=node-1"'
    systemctl stop wallance
    mv /var/lib/wallance/key /root/key
    systemctl start wallance
    check "without its key the unit is skipped" sh -c \
        'systemctl status wallance | grep -q "ConditionPathExists=/var/lib/wallance/key was not met"'
    mv /root/key /var/lib/wallance/key
    systemctl start wallance
    starts=$(journalctl -u wallance -o cat | grep -c "node started")
    dpkg -i /x/wallance.deb >/x/dpkg-upgrade.log 2>&1
    sleep 2
    check "an upgrade restarts the node" test "$(journalctl -u wallance -o cat | grep -c 'node started')" -gt "$starts"
    check "the upgrade kept the token" grep -q '^api_token = ' /etc/wallance/node.toml
    dpkg -r wallance >/x/dpkg-remove.log 2>&1
    check "remove stops the node" sh -c '! systemctl is-active wallance'
    check "remove keeps the key and the store" test -f /var/lib/wallance/key -a -f /var/lib/wallance/wallance.redb
    dpkg -P wallance >/x/dpkg-purge.log 2>&1
    check "purge deletes /var/lib/wallance" test ! -e /var/lib/wallance
    check "purge deletes /etc/wallance" test ! -e /etc/wallance
    check "purge deletes the user" sh -c '! getent passwd wallance'
    check "purge deletes the group" sh -c '! getent group wallance'
    check "purge says nothing but dpkg's lines" sh -c '! grep -v "^(Reading\|^Purging\|^Removing" /x/dpkg-purge.log'
    echo "done"
    exit 0
    ;;
esac

deb=$(realpath "$1")
wasm=$(realpath "$2")
[ "$(id -u)" = 0 ] || { echo "run as root (it only touches a throwaway overlay)" >&2; exit 2; }
shared=$(mktemp -d /tmp/wallance-systemd-test.XXXXXX)
chmod 0755 "$shared" # the test's operator reads the contract from it
cp "$deb" "$shared/wallance.deb"
cp "$wasm" "$shared/espresso.wasm"
cp "$0" "$shared/test-in-systemd.sh"
chmod 0755 "$shared/test-in-systemd.sh"
unshare --mount --pid --net --uts --ipc --fork --propagation private sh -eu -c '
    box=$1/box
    mkdir -p "$box/upper" "$box/work" "$box/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$box/upper,workdir=$box/work" "$box/root"
    mkdir -p "$box/root/x"
    mount --bind "$1" "$box/root/x"
    mount -t proc proc "$box/root/proc"
    mount --rbind /dev "$box/root/dev"
    mount --rbind /sys "$box/root/sys"
    mount -t tmpfs tmpfs "$box/root/tmp"
    mount -t tmpfs tmpfs "$box/root/run"
    chroot "$box/root" /x/test-in-systemd.sh --prepare
    umount "$box/root/proc"
    exec chroot "$box/root" /usr/bin/env container=wallance-test /lib/systemd/systemd --system \
        --log-target=null --show-status=no
' sh "$shared" >"$shared/systemd.log" 2>&1 || true
cat "$shared/verify.log" 2>/dev/null || echo "no verify.log: see $shared/systemd.log"
if grep -q '^done$' "$shared/verify.log" 2>/dev/null && ! grep -q '^FAIL' "$shared/verify.log"; then
    rm -rf "$shared"
    echo "every check passed"
else
    echo "FAILED (logs in $shared)" >&2
    exit 1
fi
