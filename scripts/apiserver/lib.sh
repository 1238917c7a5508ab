# Helpers shared by start.sh and stop.sh (sourced; both set DIR first).

# running PID: the process exists and is not a zombie. For a pid this shell
# launched itself: until the forked child has exec'd, its command line is
# still this script's, so alive() below would call it dead (that race failed
# a CI run: "etcd did not become healthy" 0.2 s after launch).
running() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]]
}

# alive PID: running, and its command line mentions DIR/ (a pid read from a
# pid file may have been recycled by some other program, not ours).
alive() {
    running "$1" || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}
