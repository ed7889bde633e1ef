# Shared by deploy.sh and teardown.sh (sourced, not run). Works with bash 3.2 (macOS) and later.
# shellcheck shell=bash

# Roles each runtime service account gets on the project. Least privilege: only the Google APIs
# the app itself calls.
#   roles/telemetry.tracesWriter   spans exported over OTLP to telemetry.googleapis.com/v1/traces
#                                  (permission telemetry.traces.write).
#   roles/telemetry.metricsWriter  metrics exported over OTLP to telemetry.googleapis.com/v1/metrics.
#   roles/serviceusage.serviceUsageConsumer
#                                  the exports name the project as their quota project
#                                  (x-goog-user-project), which Google's Telemetry API setup asks
#                                  this role for (permission serviceusage.services.use).
# Not granted, on purpose:
#   roles/telemetry.writer         covers both of the above, and in current role versions also
#                                  telemetry.logs.write, which the app never uses.
#   roles/logging.logWriter        the app only writes JSON lines to stdout; Cloud Run itself ships
#                                  stdout/stderr to Cloud Logging, no role is needed for that.
#   roles/monitoring.metricWriter  the app does not call the Cloud Monitoring API. If OTLP metric
#                                  export is ever refused naming monitoring.timeSeries.create, add it
#                                  here (Google's documentation has listed both permissions).
#   roles/cloudtrace.agent         legacy Cloud Trace API writer; we export through OTLP only.
#   roles/run.invoker              granted by deploy.sh to the api's account on the backend SERVICE,
#                                  never on the project (that would let it call every service).
# shellcheck disable=SC2034 # used by the scripts that source this file
RUNTIME_PROJECT_ROLES=(
  roles/telemetry.tracesWriter
  roles/telemetry.metricsWriter
  roles/serviceusage.serviceUsageConsumer
)

# A dry run's plan goes to file descriptor 3, a copy of the original stdout, so that commands run
# inside $(...) still show up in it.
exec 3>&1

# Progress goes to stderr; in a dry run it becomes a comment in the plan.
log() {
  if [[ "${DRY_RUN:-false}" == true ]]; then
    printf '# %s\n' "$*" >&3
  else
    printf '==> %s\n' "$*" >&2
  fi
}

die() {
  printf '%s: %s\n' "$(basename "$0")" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: %s\nRun %s --help for the options.\n' "$(basename "$0")" "$*" "$0" >&2
  exit 2
}

# Fails with a usage error unless option $1 has a value in $2.
require_value() {
  if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
    usage_error "option $1 needs a value"
  fi
}

# Option handlers look at the arguments from $1 on and set OPTION_ARGS to how many they used,
# 0 when $1 is not theirs.

# For an option with a value: value_option VARIABLE "$@" sets VARIABLE to the option's value.
value_option() {
  require_value "${@:2}"
  printf -v "$1" '%s' "$3"
  OPTION_ARGS=2
}

# The options both scripts take.
shared_option() {
  OPTION_ARGS=0
  case "$1" in
    --project) value_option PROJECT_ID "$@" ;;
    --region) value_option REGION "$@" ;;
    --repository) value_option REPOSITORY "$@" ;;
    --api-service) value_option API_SERVICE "$@" ;;
    --backend-service) value_option BACKEND_SERVICE "$@" ;;
    --dry-run) DRY_RUN=true; OPTION_ARGS=1 ;;
  esac
}

# Parses the command line: --name=value is split in two, -h prints the script's usage, and each
# option goes to shared_option, then to the script's own handler named in $1.
parse_options() {
  local own_option="$1"
  shift
  while (($# > 0)); do
    case "$1" in
      --*=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        continue
        ;;
      -h | --help) usage; exit 0 ;;
    esac
    shared_option "$@"
    ((OPTION_ARGS > 0)) || "$own_option" "$@"
    ((OPTION_ARGS > 0)) || usage_error "unknown option: $1"
    shift "$OPTION_ARGS"
  done
}

# Quotes one argument for display the way a shell would need it (--flag='a value' for options).
quote_arg() {
  local safe='^[A-Za-z0-9_./:=,@%+-]*$' option='^(--[A-Za-z0-9-]+=)(.*)$'
  if [[ -n "$1" && "$1" =~ $safe ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ $option ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote_arg "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command so that it can be pasted into a shell.
show_command() {
  local line="" arg
  for arg in "$@"; do
    line+="$(quote_arg "$arg") "
  done
  printf '%s\n' "${line% }"
}

# Runs a command, or with DRY_RUN=true only prints it.
run() {
  if [[ "$DRY_RUN" == true ]]; then
    show_command "$@" >&3
    return 0
  fi
  printf '+ %s\n' "$(show_command "$@")" >&2
  "$@"
}

# Runs a read-only probe command and reports success. A dry run prints it and answers "no", so the
# printed plan shows the create path.
probe() {
  if [[ "$DRY_RUN" == true ]]; then
    show_command "$@" >&3
    return 1
  fi
  "$@" >/dev/null 2>&1
}

# Whether the resource a read-only describe command names exists: yes if it succeeds, no if gcloud
# says it is not there. Any other failure (an expired login, a missing permission, the network)
# stops the script with gcloud's message, rather than passing for "already gone". A dry run prints
# the command and answers "no", as probe does.
exists() {
  if [[ "$DRY_RUN" == true ]]; then
    show_command "$@" >&3
    return 1
  fi
  local error
  if error="$("$@" 2>&1 >/dev/null)"; then
    return 0
  fi
  if is_not_found "$error"; then
    return 1
  fi
  die "$(show_command "$@") failed: ${error}"
}

# gcloud's ways of saying that a resource, or a policy binding, is not there.
is_not_found() {
  case "$1" in
    *NOT_FOUND* | *"Cannot find"* | *"not found"* | *"does not exist"*) return 0 ;;
    *) return 1 ;;
  esac
}

# Prints the output of a read-only command ($2...); a dry run prints the command to the plan and
# answers the placeholder $1 instead.
capture() {
  local placeholder="$1"
  shift
  if [[ "$DRY_RUN" == true ]]; then
    show_command "$@" >&3
    printf '%s' "$placeholder"
    return 0
  fi
  "$@"
}

# Retries a command while IAM catches up with a service account created seconds ago.
# DEPLOY_RETRY_DELAY_SECONDS exists for the tests.
retry() {
  local attempt=1 attempts=6 delay="${DEPLOY_RETRY_DELAY_SECONDS:-10}"
  until "$@"; do
    if ((attempt >= attempts)); then
      return 1
    fi
    log "retrying in ${delay}s (attempt $((attempt + 1)) of ${attempts}); new service accounts take a moment to appear in IAM"
    sleep "$delay"
    attempt=$((attempt + 1))
  done
}

# Service account id for a Cloud Run service: <service>-sa. IDs must be 6-30 characters.
service_account_id() {
  local id="$1-sa"
  if ((${#id} > 30)); then
    die "service account id '$id' is longer than 30 characters: choose a shorter service name"
  fi
  printf '%s' "$id"
}

service_account_email() {
  local id
  id="$(service_account_id "$1")"
  printf '%s@%s.iam.gserviceaccount.com' "$id" "$2"
}
