#!/bin/bash
# dogbreed bootstrap: EC2 user data for a Deep Learning AMI (rendered by `python -m ami launch`).
#
# Activates the image's PyTorch environment (the bundled venv on newer DLAMIs, the conda
# `pytorch` env on older ones: detected, not assumed), installs the project without touching
# the image's torch, syncs the data from S3 and starts training in tmux. Every step is guarded
# by a marker, and the script registers itself to run at every boot, so a reboot repeats only
# what is unfinished and a stopped training run resumes (trainer.resume=auto, pinned run name).
# When train.py ends (after its own uploads) the instance stops or terminates (ami.on_finish);
# a watcher stops an instance idle for ami.idle_timeout_min; the CloudWatch agent ships train.log.
#
# Every setting below is an environment variable with a default, so the same file runs on a
# real instance (defaults rendered from conf/ami.yaml) and in a test (probed paths overridden).
set -euo pipefail
# cloud-init may run user data without HOME.
HOME=${HOME:-/root}

# @RENDERED@ launch writes the values from conf/ami.yaml below this line.
DOGBREED_CODE_URI=${DOGBREED_CODE_URI-}
DOGBREED_S3_URI=${DOGBREED_S3_URI-}
DOGBREED_DATA_URI=${DOGBREED_DATA_URI-}
DOGBREED_TRAIN=${DOGBREED_TRAIN-0}
DOGBREED_TRAIN_ARGS=${DOGBREED_TRAIN_ARGS-}
DOGBREED_NODES=${DOGBREED_NODES-1}
DOGBREED_RDZV_HOST=${DOGBREED_RDZV_HOST-}
DOGBREED_RDZV_PORT=${DOGBREED_RDZV_PORT-29500}
DOGBREED_RUN_AS=${DOGBREED_RUN_AS-}
DOGBREED_RUN_NAME=${DOGBREED_RUN_NAME-}
DOGBREED_REGION=${DOGBREED_REGION-}
# stop, terminate or none: what the instance does when train.py ends.
DOGBREED_ON_FINISH=${DOGBREED_ON_FINISH-none}
# Seconds without a training process and without an SSH session before the instance stops; 0 = never.
DOGBREED_IDLE_S=${DOGBREED_IDLE_S-0}
DOGBREED_LOG_GROUP=${DOGBREED_LOG_GROUP-}
# Paths the script probes; overridable so a test can fake a DLAMI in a temp HOME without root.
DOGBREED_VENV_DIRS=${DOGBREED_VENV_DIRS-/opt/pytorch}
DOGBREED_CONDA_ROOTS=${DOGBREED_CONDA_ROOTS-$HOME/anaconda3 $HOME/miniconda3 /opt/conda}
DOGBREED_WORKDIR=${DOGBREED_WORKDIR-$HOME/dogbreed}
DOGBREED_PER_BOOT_DIR=${DOGBREED_PER_BOOT_DIR-/var/lib/cloud/scripts/per-boot}
DOGBREED_SESSION=${DOGBREED_SESSION-dogbreed}
DOGBREED_IMDS_URL=${DOGBREED_IMDS_URL-http://169.254.169.254}
DOGBREED_CW_AGENT_CTL=${DOGBREED_CW_AGENT_CTL-/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl}
DOGBREED_IDLE_POLL_S=${DOGBREED_IDLE_POLL_S-60}
# The CloudWatch agent sends every few seconds: give it the last lines of the log before power-off.
DOGBREED_LOG_FLUSH_S=${DOGBREED_LOG_FLUSH_S-15}
self=$(readlink -f "$0")

say() { echo "dogbreed-bootstrap: $*"; }
fail() {
    say "ERROR: $*" >&2
    exit 1
}

# A terminated instance of a persistent spot request would be replaced by a new one: the
# request is cancelled first. Its id is the instance tag launch wrote (instance metadata tags).
cancel_spot_request() {
    local token request
    token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$DOGBREED_IMDS_URL/latest/api/token") ||
        return 0
    request=$(curl -sf -H "X-aws-ec2-metadata-token: $token" \
        "$DOGBREED_IMDS_URL/latest/meta-data/tags/instance/dogbreed:spot-request") || return 0
    say "cancelling spot request $request so nothing replaces this instance"
    aws ec2 cancel-spot-instance-requests --region "$DOGBREED_REGION" --spot-instance-request-ids "$request" >/dev/null ||
        say "could not cancel $request; python -m ami down cancels it"
}

# Powers off; EC2 then stops or terminates the instance (its shutdown behaviour matches `how`).
end_instance() {
    local how=$1 why=$2
    if [ "$how" = none ]; then
        say "$why; ami.on_finish=none: the instance keeps running"
        return 0
    fi
    [ "$how" = terminate ] && cancel_spot_request
    say "$why; shutting down ($how)"
    sleep "$DOGBREED_LOG_FLUSH_S"
    sudo shutdown -h now
}

# Run by the tmux session after train.py, with its exit status. A signal (143, 130) means the
# machine itself is stopping (spot interruption, shutdown): it resumes at the next boot instead.
finish() {
    local status=$1
    case $status in
    0) touch "$DOGBREED_WORKDIR/.train-finished" ;;
    130 | 143) say "training stopped by a signal; it resumes at the next boot" && return 0 ;;
    esac
    end_instance "$DOGBREED_ON_FINISH" "training ended with exit status $status"
}

# Stops the instance once nothing has trained and nobody has been logged in for DOGBREED_IDLE_S.
idle_watch() {
    local last_busy now
    last_busy=$(date +%s)
    while sleep "$DOGBREED_IDLE_POLL_S"; do
        now=$(date +%s)
        if pgrep -f 'train\.py' >/dev/null || [ -n "$(who)" ] || pgrep -u "$(id -u)" sshd >/dev/null; then
            last_busy=$now
        elif [ $((now - last_busy)) -ge "$DOGBREED_IDLE_S" ]; then
            local how=stop
            [ "$DOGBREED_ON_FINISH" = terminate ] && how=terminate
            end_instance "$how" "idle for $DOGBREED_IDLE_S s (no training, no SSH session)"
            return 0
        fi
    done
}

start_idle_watch() {
    local pidfile="$DOGBREED_WORKDIR/.idle-watch.pid"
    [ "$DOGBREED_IDLE_S" -gt 0 ] || return 0
    if [ -e "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return 0
    fi
    setsid bash "$self" idle-watch >>"$DOGBREED_WORKDIR/idle-watch.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    say "idle watcher started: the instance stops after $DOGBREED_IDLE_S s without training or SSH"
}

# Ships train.log to CloudWatch Logs with the agent the DLAMI has (as root, before the hop).
ship_log() {
    local home
    if [ -z "$DOGBREED_LOG_GROUP" ] || [ ! -x "$DOGBREED_CW_AGENT_CTL" ]; then
        say "not shipping train.log to CloudWatch (no log group or no agent); python -m ami logs falls back to SSH"
        return 0
    fi
    home=$(getent passwd "$DOGBREED_RUN_AS" | cut -d: -f6) || home=/home/$DOGBREED_RUN_AS
    local config
    config=$(dirname "$DOGBREED_CW_AGENT_CTL")/../etc/dogbreed-train-log.json
    cat >"$config" <<JSON
{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "$home/dogbreed/train.log",
 "log_group_name": "$DOGBREED_LOG_GROUP", "log_stream_name": "{instance_id}"}]}}}}
JSON
    "$DOGBREED_CW_AGENT_CTL" -a fetch-config -m ec2 -c "file:$config" -s >/dev/null ||
        say "the CloudWatch agent refused its config; python -m ami logs falls back to SSH"
}

case ${1-} in
finish)
    finish "$2"
    exit 0
    ;;
idle-watch)
    idle_watch
    exit 0
    ;;
esac

# Runs at every boot as root: registers a copy of this script, then continues as the SSH user
# so the tmux session, the files and the pip installs belong to whoever logs in.
if [ "$(id -u)" = 0 ] && [ -n "$DOGBREED_RUN_AS" ]; then
    ship_log
    script=$0
    # The per-boot copy is world-readable; cloud-init's own copy of the user data is not.
    if [ -d "$DOGBREED_PER_BOOT_DIR" ]; then
        script="$DOGBREED_PER_BOOT_DIR/dogbreed-bootstrap.sh"
        [ "$0" -ef "$script" ] || install -m 0755 "$0" "$script"
        say "registered to run at every boot ($script)"
    fi
    say "continuing as $DOGBREED_RUN_AS"
    exec sudo -u "$DOGBREED_RUN_AS" -H env DOGBREED_RUN_AS= bash "$script"
fi

# Newer DLAMIs ship a venv, older ones a conda env called pytorch; the first whose python
# imports torch wins.
find_env() {
    local candidate
    for candidate in $DOGBREED_VENV_DIRS; do
        if [ -x "$candidate/bin/python" ] && "$candidate/bin/python" -c 'import torch' >/dev/null 2>&1; then
            echo "venv $candidate"
            return 0
        fi
    done
    for candidate in $DOGBREED_CONDA_ROOTS; do
        if [ -x "$candidate/envs/pytorch/bin/python" ] &&
            "$candidate/envs/pytorch/bin/python" -c 'import torch' >/dev/null 2>&1; then
            echo "conda $candidate/envs/pytorch"
            return 0
        fi
    done
    return 1
}

env_line=$(find_env) || fail "no PyTorch environment found (looked for venvs in: $DOGBREED_VENV_DIRS;" \
    "conda envs named pytorch under: $DOGBREED_CONDA_ROOTS); is this a PyTorch Deep Learning AMI?"
env_kind=${env_line%% *}
env_dir=${env_line#* }
if [ "$env_kind" = venv ]; then
    export VIRTUAL_ENV="$env_dir"
else
    export CONDA_PREFIX="$env_dir" CONDA_DEFAULT_ENV=pytorch
fi
export PATH="$env_dir/bin:$PATH"
say "using the $env_kind environment $env_dir"

mkdir -p "$DOGBREED_WORKDIR"
cd "$DOGBREED_WORKDIR"

# The code archive's name carries its content hash, so a new launch reinstalls and a reboot does not.
if [ -n "$DOGBREED_CODE_URI" ]; then
    marker=".installed-$(basename "$DOGBREED_CODE_URI")"
    if [ -e "$marker" ]; then
        say "project already installed from $DOGBREED_CODE_URI"
    else
        say "installing the project from $DOGBREED_CODE_URI"
        aws s3 cp --only-show-errors "$DOGBREED_CODE_URI" code.tar.gz
        rm -rf src && mkdir src && tar -xzf code.tar.gz -C src
        # The project's own set-up for an image with PyTorch (the Makefile's setup-dlami): the
        # image's torch/torchvision are pinned, pip adds what is missing but never swaps the CUDA
        # build AWS tuned for this image (it fails loudly if the image's torch is too old).
        make --no-print-directory -C src setup-dlami ENV_PYTHON=python
        touch "$marker"
        say "project installed"
    fi
fi

data_root=""
if [ -n "$DOGBREED_DATA_URI" ]; then
    data_root="$DOGBREED_WORKDIR/data/dogImages"
    say "syncing $DOGBREED_DATA_URI to $data_root"
    # sync copies only what is missing or changed: cheap to repeat at every boot.
    aws s3 sync --only-show-errors "$DOGBREED_DATA_URI" "$data_root"
    say "data ready"
fi

# Only now: installing and syncing are not idleness, however long they take.
start_idle_watch
if [ "$DOGBREED_TRAIN" != 1 ]; then
    say "ready; training not requested (ami.train=false)"
    exit 0
fi
if [ -e .train-finished ]; then
    say "training already finished; see $DOGBREED_WORKDIR/train.log"
    exit 0
fi
if tmux has-session -t "$DOGBREED_SESSION" 2>/dev/null; then
    say "training already running in tmux session $DOGBREED_SESSION"
    exit 0
fi

args=()
[ -n "$DOGBREED_S3_URI" ] && args+=(storage=s3 "storage.s3_uri=$DOGBREED_S3_URI/runs")
[ -n "$data_root" ] && args+=("data.root=$data_root")
# resume=auto continues the run's checkpoint (local, or in S3 on a replacement machine) and
# starts fresh when there is none; the pinned name makes every node and every boot the same run.
[ -n "$DOGBREED_RUN_NAME" ] && args+=("storage.run_name=$DOGBREED_RUN_NAME")
args+=(trainer.resume=auto)
if [ "$DOGBREED_NODES" -gt 1 ]; then
    # The first node hosts the rendezvous; the others were told its private address at launch.
    rdzv_host=${DOGBREED_RDZV_HOST:-$(hostname -I | awk '{print $1}')}
    launcher=("$env_dir/bin/torchrun" "--nnodes=$DOGBREED_NODES" --nproc-per-node=auto --rdzv-backend=c10d
        "--rdzv-id=$DOGBREED_SESSION" "--rdzv-endpoint=$rdzv_host:$DOGBREED_RDZV_PORT")
else
    launcher=("$env_dir/bin/python")
fi
# Absolute paths: a tmux server started earlier keeps its own PATH, without the environment.
# DOGBREED_TRAIN_ARGS was shell-quoted at render time, one override per word.
command="cd $(printf %q "$DOGBREED_WORKDIR/src") && $(printf '%q ' "${launcher[@]}")train.py"
command+=" $(printf '%q ' "${args[@]}")$DOGBREED_TRAIN_ARGS"
command+=" >>$(printf %q "$DOGBREED_WORKDIR/train.log") 2>&1; bash $(printf %q "$self") finish \$?"
tmux new-session -d -s "$DOGBREED_SESSION" "$command"
say "training started in tmux session $DOGBREED_SESSION (tmux attach -t $DOGBREED_SESSION); log: $DOGBREED_WORKDIR/train.log"
