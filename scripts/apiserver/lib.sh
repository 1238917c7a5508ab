# Helpers shared by start.sh and stop.sh (sourced; both set DIR first).

# alive PID: the process exists, is not a zombie, and its command line
# mentions DIR/ (a recycled pid belongs to some other program, not ours).
alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}
