# Sourced by the scripts: paths, cargo, and the cgroup wrapper.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

# On a pure cgroup v2 host a login session's cgroup holds other processes, so skiff cannot
# enable controllers beneath it; a transient scope with delegation gives it a cgroup of its own.
skiff_wrapper() {
    if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] && command -v systemd-run >/dev/null \
        && [[ -d /run/systemd/system ]]; then
        echo systemd-run --scope --quiet -p Delegate=yes
    fi
}
