#!/usr/bin/env bash
# Deletes what deploy/deploy.sh created: both Cloud Run services, their project role bindings and
# service accounts, and with --delete-repository the image repository. Leaves enabled APIs alone,
# and keeps an account that a Cloud Run service elsewhere still runs as. Safe to re-run: anything
# already gone is skipped.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$SCRIPT_DIR/common.sh"

usage() {
  cat <<'EOF'
Usage: deploy/teardown.sh [options]

Options (environment variable in brackets; defaults as in deploy.sh):
  --project ID            Google Cloud project [PROJECT_ID]; default: gcloud's configured project
  --region REGION         region [REGION]; default us-central1
  --api-service NAME      [API_SERVICE]; default greeter-api
  --backend-service NAME  [BACKEND_SERVICE]; default greeter-backend
  --repository NAME       [REPOSITORY]; default cloud-run-services
  --delete-repository     also delete the Artifact Registry repository and every image in it
  --yes                   do not ask for confirmation
  --dry-run               print every gcloud command instead of running any
  -h, --help              show this help
EOF
}

PROJECT_ID="${PROJECT_ID:-}"
REGION="${REGION:-us-central1}"
API_SERVICE="${API_SERVICE:-greeter-api}"
BACKEND_SERVICE="${BACKEND_SERVICE:-greeter-backend}"
REPOSITORY="${REPOSITORY:-cloud-run-services}"
DELETE_REPOSITORY=false
ASSUME_YES=false
DRY_RUN=false

teardown_option() {
  OPTION_ARGS=0
  case "$1" in
    --delete-repository) DELETE_REPOSITORY=true; OPTION_ARGS=1 ;;
    --yes) ASSUME_YES=true; OPTION_ARGS=1 ;;
  esac
}

parse_args() {
  parse_options teardown_option "$@"
}

confirm() {
  if [[ "$ASSUME_YES" == true || "$DRY_RUN" == true ]]; then
    return 0
  fi
  if [[ ! -t 0 ]]; then
    die "refusing to delete without confirmation: pass --yes (or --dry-run to see the plan)"
  fi
  local what="services $API_SERVICE and $BACKEND_SERVICE and their service accounts (unless another service runs as them)"
  if [[ "$DELETE_REPOSITORY" == true ]]; then
    what+=", and the repository $REPOSITORY with all its images"
  fi
  local answer
  read -r -p "Delete $what in project $PROJECT_ID ($REGION)? Type the project id to confirm: " answer
  if [[ "$answer" != "$PROJECT_ID" ]]; then
    die "not confirmed; nothing deleted"
  fi
}

delete_service() {
  local service="$1"
  log "Cloud Run service $service"
  if ! exists gcloud run services describe "$service" \
    --project="$PROJECT_ID" --region="$REGION" --format='value(status.url)'; then
    if [[ "$DRY_RUN" != true ]]; then
      log "already gone"
      return 0
    fi
  fi
  run gcloud run services delete "$service" --project="$PROJECT_ID" --region="$REGION" --quiet
}

# Reads every Cloud Run service of the project into ALL_SERVICES, one "region<TAB>name<TAB>account"
# line each. Without --region, `gcloud run services list` asks every region (whatever run/region
# says). Any failure stops the teardown, and so does gcloud's warning that some regions did not
# answer: an incomplete list must not pass for "nobody else runs as this account".
list_all_services() {
  local command=(gcloud run services list --project="$PROJECT_ID"
    --format='value(region,metadata.name,spec.template.spec.serviceAccountName)')
  ALL_SERVICES=''
  if [[ "$DRY_RUN" == true ]]; then
    show_command "${command[@]}" >&3
    log "an account is kept, with its project roles, while a service listed above runs as it"
    return 0
  fi
  local errors_file errors
  errors_file="$(mktemp "${TMPDIR:-/tmp}/teardown-list.XXXXXX")"
  if ! ALL_SERVICES="$("${command[@]}" 2>"$errors_file")"; then
    errors="$(<"$errors_file")"
    rm -f "$errors_file"
    die "$(show_command "${command[@]}") failed, so no account can be checked; nothing deleted: ${errors}"
  fi
  errors="$(<"$errors_file")"
  rm -f "$errors_file"
  case "$errors" in
    *"did not respond"* | *"may be incomplete"*)
      die "some regions did not answer, so other users of the accounts cannot be ruled out; nothing deleted. Run it again: ${errors}"
      ;;
    *) ;;
  esac
}

# Prints the services (other than the two being torn down) that run as account $1, comma-separated.
services_running_as() {
  local email="$1" region name account users=''
  while IFS=$'\t' read -r region name account; do
    if [[ "$account" != "$email" ]]; then
      continue
    fi
    if [[ "$region" == "$REGION" && ("$name" == "$API_SERVICE" || "$name" == "$BACKEND_SERVICE") ]]; then
      continue
    fi
    users+="${users:+, }$name ($region)"
  done <<<"$ALL_SERVICES"
  printf '%s' "$users"
}

delete_service_account() {
  local service="$1" email role users
  email="$(service_account_email "$service" "$PROJECT_ID")"
  log "Service account $email"
  if ! exists gcloud iam service-accounts describe "$email" --project="$PROJECT_ID"; then
    if [[ "$DRY_RUN" != true ]]; then
      log "already gone"
      return 0
    fi
  fi
  users="$(services_running_as "$email")"
  if [[ -n "$users" ]]; then
    log "kept, with its project roles: still used by $users"
    return 0
  fi
  # Remove the project bindings first: bindings of a deleted account linger as deleted:serviceAccount.
  for role in "${RUNTIME_PROJECT_ROLES[@]}"; do
    remove_project_binding "serviceAccount:$email" "$role"
  done
  run gcloud iam service-accounts delete "$email" --project="$PROJECT_ID" --quiet
}

# A binding that is not there is fine; any other failure stops before the account is deleted, so
# that no binding is left behind as deleted:serviceAccount.
remove_project_binding() {
  local member="$1" role="$2" error
  local command=(gcloud projects remove-iam-policy-binding "$PROJECT_ID"
    --member="$member" --role="$role" --condition=None --format=none --quiet)
  if [[ "$DRY_RUN" == true ]]; then
    run "${command[@]}"
    return 0
  fi
  printf '+ %s\n' "$(show_command "${command[@]}")" >&2
  if error="$("${command[@]}" 2>&1 >/dev/null)"; then
    return 0
  fi
  if is_not_found "$error"; then
    log "no $role binding to remove"
    return 0
  fi
  die "removing $role from $member failed: ${error}"
}

delete_repository() {
  log "Artifact Registry repository $REPOSITORY"
  if ! exists gcloud artifacts repositories describe "$REPOSITORY" \
    --project="$PROJECT_ID" --location="$REGION"; then
    if [[ "$DRY_RUN" != true ]]; then
      log "already gone"
      return 0
    fi
  fi
  run gcloud artifacts repositories delete "$REPOSITORY" \
    --project="$PROJECT_ID" --location="$REGION" --quiet
}

main() {
  parse_args "$@"
  if [[ -z "$PROJECT_ID" && "$DRY_RUN" != true ]]; then
    PROJECT_ID="$(gcloud config get-value project 2>/dev/null || true)"
  fi
  if [[ -z "$PROJECT_ID" ]]; then
    usage_error "no project: pass --project ID or set PROJECT_ID (a dry run never asks gcloud for one)"
  fi
  service_account_id "$API_SERVICE" >/dev/null
  service_account_id "$BACKEND_SERVICE" >/dev/null
  confirm
  if [[ "$DRY_RUN" == true ]]; then
    printf '# Dry run: nothing below has been run. Plan for project %s, region %s.\n' \
      "$PROJECT_ID" "$REGION" >&3
  fi

  # Before anything is deleted, so that a failed list leaves everything in place.
  list_all_services
  # The api first: it is the public entry point and the only caller of the backend.
  delete_service "$API_SERVICE"
  delete_service "$BACKEND_SERVICE"
  delete_service_account "$API_SERVICE"
  delete_service_account "$BACKEND_SERVICE"
  if [[ "$DELETE_REPOSITORY" == true ]]; then
    delete_repository
  else
    log "Keeping the repository $REPOSITORY (pass --delete-repository to delete it and its images)"
  fi
}

main "$@"
