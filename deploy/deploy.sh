#!/usr/bin/env bash
# Deploys the one container image to Cloud Run twice: a private gRPC backend (h2c) and a public
# REST api that calls it with Google-signed ID tokens. Safe to re-run: it creates what is missing
# and redeploys both services. Read "Deploy to Cloud Run" in README.md first.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$SCRIPT_DIR/common.sh"

usage() {
  cat <<'EOF'
Usage: deploy/deploy.sh [options]

Builds one image, pushes it to Artifact Registry and deploys it as two Cloud Run services.

Options (environment variable in brackets):
  --project ID            Google Cloud project [PROJECT_ID]; default: gcloud's configured project
  --region REGION         Cloud Run and Artifact Registry region [REGION]; default us-central1
  --repository NAME       Artifact Registry Docker repository [REPOSITORY]; default cloud-run-services
  --api-service NAME      public REST service [API_SERVICE]; default greeter-api
  --backend-service NAME  private gRPC service [BACKEND_SERVICE]; default greeter-backend
  --tag TAG               image tag [IMAGE_TAG]; default: git short SHA (plus -dirty-<time> when
                          the work tree has changes), or a UTC timestamp outside git
  --image REF             deploy this already-pushed image; skips the repository and the build
  --build local|cloud     local: docker build + push (default); cloud: gcloud builds submit
  --mode flags|yaml       flags: gcloud run deploy (default); yaml: render deploy/*.service.yaml
                          and apply them with gcloud run services replace
  --cpu-always-on         instance-based billing (--no-cpu-throttling) with batched telemetry
                          export; default is request-based billing with a flush per request
  --ingress all|internal  backend ingress; default all (IAM alone protects it). internal also puts
                          the api on a VPC with Direct VPC egress and needs --network and --subnet
  --network NAME          VPC network for the api's Direct VPC egress (--ingress internal)
  --subnet NAME           subnet for it; enable Private Google Access on it
  --max-instances N       per-service instance cap, a cost guard; default 10
  --memory SIZE           memory per instance; default 512Mi
  --dry-run               print every gcloud/docker command instead of running any
  -h, --help              show this help
EOF
}

PROJECT_ID="${PROJECT_ID:-}"
REGION="${REGION:-us-central1}"
REPOSITORY="${REPOSITORY:-cloud-run-services}"
API_SERVICE="${API_SERVICE:-greeter-api}"
BACKEND_SERVICE="${BACKEND_SERVICE:-greeter-backend}"
IMAGE_TAG="${IMAGE_TAG:-}"
IMAGE_NAME=greeter
IMAGE=""
BUILD=local
MODE=flags
CPU_ALWAYS_ON=false
INGRESS=all
NETWORK=""
SUBNET=""
MAX_INSTANCES=10
MEMORY=512Mi
DRY_RUN=false

# The container listens on $PORT; Cloud Run sets it from the container port, 8080 for both roles.
readonly CONTAINER_PORT=8080

deploy_option() {
  OPTION_ARGS=0
  case "$1" in
    --tag) value_option IMAGE_TAG "$@" ;;
    --image) value_option IMAGE "$@" ;;
    --build) value_option BUILD "$@" ;;
    --mode) value_option MODE "$@" ;;
    --ingress) value_option INGRESS "$@" ;;
    --network) value_option NETWORK "$@" ;;
    --subnet) value_option SUBNET "$@" ;;
    --max-instances) value_option MAX_INSTANCES "$@" ;;
    --memory) value_option MEMORY "$@" ;;
    --cpu-always-on) CPU_ALWAYS_ON=true; OPTION_ARGS=1 ;;
  esac
}

parse_args() {
  parse_options deploy_option "$@"
}

validate() {
  case "$BUILD" in local | cloud) ;; *) usage_error "--build must be local or cloud, not '$BUILD'" ;; esac
  case "$MODE" in flags | yaml) ;; *) usage_error "--mode must be flags or yaml, not '$MODE'" ;; esac
  case "$INGRESS" in
    all)
      if [[ -n "$NETWORK$SUBNET" ]]; then
        usage_error "--network and --subnet are only used with --ingress internal"
      fi
      ;;
    internal)
      if [[ -z "$NETWORK" || -z "$SUBNET" ]]; then
        usage_error "--ingress internal needs --network and --subnet: the api must reach the backend through a VPC (Direct VPC egress)"
      fi
      ;;
    *) usage_error "--ingress must be all or internal, not '$INGRESS'" ;;
  esac
  if [[ ! "$MAX_INSTANCES" =~ ^[1-9][0-9]*$ ]]; then
    usage_error "--max-instances must be a positive integer, not '$MAX_INSTANCES'"
  fi
  if [[ -n "$IMAGE_TAG" && ! "$IMAGE_TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    usage_error "--tag '$IMAGE_TAG' is not a valid Docker tag (letters, digits, _ . -; at most 128)"
  fi
  if [[ -z "$REGION" ]]; then
    usage_error "--region is empty"
  fi
  if [[ "$API_SERVICE" == "$BACKEND_SERVICE" ]]; then
    usage_error "--api-service and --backend-service must differ"
  fi
  if [[ -z "$PROJECT_ID" && "$DRY_RUN" != true ]]; then
    PROJECT_ID="$(gcloud config get-value project 2>/dev/null || true)"
  fi
  if [[ -z "$PROJECT_ID" ]]; then
    usage_error "no project: pass --project ID or set PROJECT_ID (a dry run never asks gcloud for one)"
  fi
  service_account_id "$API_SERVICE" >/dev/null
  service_account_id "$BACKEND_SERVICE" >/dev/null
}

default_image_tag() {
  local sha
  if sha="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null)"; then
    if [[ -n "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null)" ]]; then
      printf '%s-dirty-%s' "$sha" "$(date -u +%Y%m%d%H%M%S)"
    else
      printf '%s' "$sha"
    fi
  else
    date -u +%Y%m%d%H%M%S
  fi
}

enable_apis() {
  log "Enabling the Google APIs the deployment and the app use"
  local apis=(
    run.googleapis.com                # Cloud Run
    artifactregistry.googleapis.com   # the image repository
    iam.googleapis.com                # creating the two service accounts
    iamcredentials.googleapis.com     # service-account impersonation (calling the backend from a laptop)
    telemetry.googleapis.com          # OTLP traces and metrics sent by the app
    cloudtrace.googleapis.com         # viewing traces
    monitoring.googleapis.com         # viewing metrics (OTLP metrics land in Cloud Monitoring)
    logging.googleapis.com            # Cloud Run's stdout logs
  )
  if [[ "$BUILD" == cloud && -z "$IMAGE" ]]; then
    apis+=(cloudbuild.googleapis.com)
  fi
  run gcloud services enable "${apis[@]}" --project="$PROJECT_ID"
}

ensure_repository() {
  log "Artifact Registry repository $REPOSITORY in $REGION"
  if probe gcloud artifacts repositories describe "$REPOSITORY" \
    --project="$PROJECT_ID" --location="$REGION"; then
    log "exists"
    return 0
  fi
  run gcloud artifacts repositories create "$REPOSITORY" \
    --project="$PROJECT_ID" --location="$REGION" --repository-format=docker \
    --description="Container images for $API_SERVICE and $BACKEND_SERVICE"
}

# Builds and pushes the image once, then pins IMAGE to its digest so both services run the very
# same bytes even if the tag moves between the two deploys.
build_and_push() {
  local repo_path="$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$IMAGE_NAME"
  local tagged="$repo_path:$IMAGE_TAG"
  log "Building $tagged ($BUILD build)"
  case "$BUILD" in
    local)
      run gcloud auth configure-docker "$REGION-docker.pkg.dev" --quiet
      # Cloud Run runs linux/amd64; the flag matters when building on an arm64 machine, where the
      # image's compile-cache step then runs emulated and needs more time.
      local build_args=()
      case "$(uname -m)" in
        arm64 | aarch64) build_args=(--build-arg=WARM_DEADLINE_MS=300000) ;;
      esac
      run docker build --platform=linux/amd64 ${build_args[@]+"${build_args[@]}"} \
        --tag="$tagged" "$REPO_ROOT"
      run docker push "$tagged"
      ;;
    cloud)
      run gcloud builds submit "$REPO_ROOT" --project="$PROJECT_ID" --tag="$tagged" --quiet
      ;;
    *) die "unknown build '$BUILD'" ;;
  esac
  IMAGE="$tagged"
  pin_image
}

# Pins IMAGE, given by tag, to its digest: both services then run the very same bytes even if
# the tag moves between the two deploys.
pin_image() {
  if [[ "$IMAGE" == *@sha256:* ]]; then
    return 0
  fi
  local repo_path="$IMAGE" digest
  # A tag follows the last ':' of the last path segment (a registry host may carry a port).
  if [[ "${IMAGE##*/}" == *:* ]]; then
    repo_path="${IMAGE%:*}"
  fi
  if ! digest="$(capture '<digest>' gcloud artifacts docker images describe "$IMAGE" \
    --format='value(image_summary.digest)')"; then
    digest=''
  fi
  if [[ "$DRY_RUN" == true ]]; then
    printf '# both services are deployed from %s@<digest of %s>; the tag stands in below\n' \
      "$repo_path" "$IMAGE" >&3
  elif [[ "$digest" == sha256:* ]]; then
    IMAGE="$repo_path@$digest"
  else
    die "could not read the digest of $IMAGE (got '$digest'): is the image in Artifact Registry? Or pass it by digest (REF@sha256:...)"
  fi
}

ensure_service_account() {
  local service="$1" email id
  id="$(service_account_id "$service")"
  email="$(service_account_email "$service" "$PROJECT_ID")"
  log "Service account $email"
  if probe gcloud iam service-accounts describe "$email" --project="$PROJECT_ID"; then
    log "exists"
    return 0
  fi
  run gcloud iam service-accounts create "$id" --project="$PROJECT_ID" \
    --display-name="Cloud Run $service" \
    --description="Runtime identity of the Cloud Run service $service"
}

grant_project_roles() {
  local email="$1" role
  for role in "${RUNTIME_PROJECT_ROLES[@]}"; do
    retry run gcloud projects add-iam-policy-binding "$PROJECT_ID" \
      --member="serviceAccount:$email" --role="$role" --condition=None --format=none --quiet
  done
}

# Flags shared by both services: billing mode, size, scaling.
common_deploy_flags() {
  local throttling=--cpu-throttling
  if [[ "$CPU_ALWAYS_ON" == true ]]; then
    throttling=--no-cpu-throttling
  fi
  COMMON_FLAGS=(
    --project="$PROJECT_ID" --region="$REGION" --image="$IMAGE" --port="$CONTAINER_PORT"
    --cpu=1 --memory="$MEMORY" "$throttling" --cpu-boost
    --min-instances=0 --max-instances="$MAX_INSTANCES" --quiet
  )
}

deploy_backend_with_flags() {
  common_deploy_flags
  run gcloud run deploy "$BACKEND_SERVICE" "${COMMON_FLAGS[@]}" \
    --service-account="$BACKEND_SA" \
    --no-allow-unauthenticated \
    --invoker-iam-check \
    --ingress="$INGRESS" \
    --use-http2 \
    --set-env-vars="SERVICE_ROLE=backend,GRPC_REFLECTION=false,DEPLOYMENT_ENVIRONMENT=production,TELEMETRY_EXPORT_MODE=$TELEMETRY_EXPORT_MODE,GOOGLE_CLOUD_PROJECT=$PROJECT_ID" \
    --startup-probe="grpc.port=$CONTAINER_PORT,initialDelaySeconds=0,periodSeconds=1,timeoutSeconds=1,failureThreshold=60" \
    --liveness-probe="grpc.port=$CONTAINER_PORT,periodSeconds=30,timeoutSeconds=5,failureThreshold=3"
}

deploy_api_with_flags() {
  common_deploy_flags
  # `gcloud run deploy` keeps what its flags leave out, so --ingress all says "no VPC" outright:
  # --clear-network removes the network interfaces and the egress setting, and does nothing to a
  # service that has none (a first deploy). gcloud refuses it beside --network or --subnet.
  local vpc_flags=(--clear-network)
  if [[ "$INGRESS" == internal ]]; then
    vpc_flags=(--network="$NETWORK" --subnet="$SUBNET" --vpc-egress=all-traffic)
  fi
  run gcloud run deploy "$API_SERVICE" "${COMMON_FLAGS[@]}" \
    --service-account="$API_SA" \
    --allow-unauthenticated \
    --ingress=all \
    --no-use-http2 \
    --set-env-vars="SERVICE_ROLE=api,BACKEND_URL=$BACKEND_URL,DEPLOYMENT_ENVIRONMENT=production,TELEMETRY_EXPORT_MODE=$TELEMETRY_EXPORT_MODE,GOOGLE_CLOUD_PROJECT=$PROJECT_ID" \
    --startup-probe="httpGet.path=$API_STARTUP_PROBE_PATH,httpGet.port=$CONTAINER_PORT,initialDelaySeconds=0,periodSeconds=$API_STARTUP_PROBE_PERIOD,timeoutSeconds=$API_STARTUP_PROBE_PERIOD,failureThreshold=$API_STARTUP_PROBE_FAILURES" \
    --liveness-probe="httpGet.path=/healthz,httpGet.port=$CONTAINER_PORT,periodSeconds=30,timeoutSeconds=5,failureThreshold=3" \
    ${vpc_flags[@]+"${vpc_flags[@]}"}
}

# Replaces every occurrence of $2 in $1 by $3, literally (no glob or & surprises).
replace_all() {
  local text="$1" token="$2" value="$3" out=""
  while [[ "$text" == *"$token"* ]]; do
    out+="${text%%"$token"*}$value"
    text="${text#*"$token"}"
  done
  printf '%s' "$out$text"
}

# Renders a deploy/*.service.yaml template: drops comment lines, activates the lines marked
# `#internal-only: ` when the ingress is internal, and fills ${NAME} placeholders from NAME=value
# arguments.
render_template() {
  local template="$1" output="$2" line pair content=""
  shift 2
  local comment='^[[:space:]]*#' internal_only='^([[:space:]]*)#internal-only: (.*)$'
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" =~ $internal_only ]]; then
      if [[ "$INGRESS" != internal ]]; then
        continue
      fi
      line="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
    elif [[ "$line" =~ $comment ]]; then
      continue
    fi
    content+="$line"$'\n'
  done <"$template"
  for pair in "$@"; do
    content="$(replace_all "$content" "\${${pair%%=*}}" "${pair#*=}")"
  done
  local leftover='\$\{[A-Za-z_][A-Za-z0-9_]*\}'
  if [[ "$content" =~ $leftover ]]; then
    die "$template still has the placeholder ${BASH_REMATCH[0]} after rendering: add it to deploy.sh"
  fi
  printf '%s\n' "${content%$'\n'}" >"$output"
}

# Applies a rendered file; a dry run prints it as a here-document so the plan stays pasteable.
replace_service() {
  local file="$1"
  if [[ "$DRY_RUN" == true ]]; then
    printf "mkdir -p %s\ncat > %s <<'YAML'\n%s\nYAML\n" "$(quote_arg "$(dirname "$file")")" \
      "$(quote_arg "$file")" "$(<"$file")" >&3
  fi
  run gcloud run services replace "$file" --project="$PROJECT_ID" --region="$REGION" --quiet
}

shared_placeholders() {
  SHARED_PLACEHOLDERS=(
    "IMAGE=$IMAGE"
    "CPU_THROTTLING=$CPU_THROTTLING"
    "TELEMETRY_EXPORT_MODE=$TELEMETRY_EXPORT_MODE"
    "PROJECT_ID=$PROJECT_ID"
    "MEMORY=$MEMORY"
    "MAX_INSTANCES=$MAX_INSTANCES"
  )
}

deploy_backend_with_yaml() {
  shared_placeholders
  local file="$WORK_DIR/backend.service.yaml"
  render_template "$SCRIPT_DIR/backend.service.yaml" "$file" "${SHARED_PLACEHOLDERS[@]}" \
    "BACKEND_SERVICE=$BACKEND_SERVICE" \
    "BACKEND_SERVICE_ACCOUNT=$BACKEND_SA" \
    "BACKEND_INGRESS=$INGRESS"
  replace_service "$file"
  # `replace` leaves IAM alone: make sure nobody made the backend public in the meantime
  # (the flags mode does the same with --no-allow-unauthenticated).
  local members member
  members="$(capture '' gcloud run services get-iam-policy "$BACKEND_SERVICE" \
    --project="$PROJECT_ID" --region="$REGION" --flatten='bindings[].members' \
    --filter='bindings.role=roles/run.invoker' --format='value(bindings.members)')"
  for member in $members; do
    case "$member" in
      allUsers | allAuthenticatedUsers)
        run gcloud run services remove-iam-policy-binding "$BACKEND_SERVICE" \
          --project="$PROJECT_ID" --region="$REGION" \
          --member="$member" --role=roles/run.invoker --format=none --quiet
        ;;
      *) ;;
    esac
  done
}

deploy_api_with_yaml() {
  shared_placeholders
  local file="$WORK_DIR/api.service.yaml"
  render_template "$SCRIPT_DIR/api.service.yaml" "$file" "${SHARED_PLACEHOLDERS[@]}" \
    "API_SERVICE=$API_SERVICE" \
    "API_SERVICE_ACCOUNT=$API_SA" \
    "BACKEND_URL=$BACKEND_URL" \
    "API_STARTUP_PROBE_PATH=$API_STARTUP_PROBE_PATH" \
    "API_STARTUP_PROBE_PERIOD=$API_STARTUP_PROBE_PERIOD" \
    "API_STARTUP_PROBE_FAILURES=$API_STARTUP_PROBE_FAILURES" \
    "NETWORK=$NETWORK" \
    "SUBNET=$SUBNET"
  replace_service "$file"
  run gcloud run services add-iam-policy-binding "$API_SERVICE" \
    --project="$PROJECT_ID" --region="$REGION" \
    --member=allUsers --role=roles/run.invoker --format=none --quiet
}

service_url() {
  capture "<$1 URL>" gcloud run services describe "$1" \
    --project="$PROJECT_ID" --region="$REGION" --format='value(status.url)'
}

main() {
  parse_args "$@"
  validate

  if [[ "$CPU_ALWAYS_ON" == true ]]; then
    # Instance-based billing: CPU stays allocated between requests, so spans leave in batches.
    CPU_THROTTLING=false
    TELEMETRY_EXPORT_MODE='batch'
  else
    # Request-based billing: CPU is throttled once the response is sent, so the app flushes its
    # spans before each response completes.
    CPU_THROTTLING=true
    TELEMETRY_EXPORT_MODE='request'
  fi
  # With internal ingress the api starts serving only once /readyz can reach the backend: Direct
  # VPC egress can take a minute or more to connect after an instance starts, so the probe gets
  # Cloud Run's whole startup window (240 s), and each try time for a backend's cold start.
  API_STARTUP_PROBE_PATH=/healthz
  API_STARTUP_PROBE_PERIOD=1
  API_STARTUP_PROBE_FAILURES=60
  if [[ "$INGRESS" == internal ]]; then
    API_STARTUP_PROBE_PATH=/readyz
    API_STARTUP_PROBE_PERIOD=2
    API_STARTUP_PROBE_FAILURES=120
  fi
  API_SA="$(service_account_email "$API_SERVICE" "$PROJECT_ID")"
  BACKEND_SA="$(service_account_email "$BACKEND_SERVICE" "$PROJECT_ID")"
  WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/deploy-greeter.XXXXXX")"
  trap 'rm -rf "$WORK_DIR"' EXIT

  if [[ "$DRY_RUN" == true ]]; then
    printf '# Dry run: nothing below has been run. Plan for project %s, region %s.\n' \
      "$PROJECT_ID" "$REGION" >&3
  fi

  enable_apis
  if [[ -z "$IMAGE" ]]; then
    if [[ -z "$IMAGE_TAG" ]]; then
      IMAGE_TAG="$(default_image_tag)"
    fi
    ensure_repository
    build_and_push
  else
    if [[ -n "$IMAGE_TAG" ]]; then
      log "--tag (IMAGE_TAG) is ignored with --image: the tag or digest is the one in $IMAGE"
    fi
    pin_image
  fi

  ensure_service_account "$BACKEND_SERVICE"
  ensure_service_account "$API_SERVICE"
  log "Project roles for telemetry export"
  grant_project_roles "$BACKEND_SA"
  grant_project_roles "$API_SA"

  log "Deploying $BACKEND_SERVICE (private, gRPC over h2c)"
  if [[ "$MODE" == yaml ]]; then
    deploy_backend_with_yaml
  else
    deploy_backend_with_flags
  fi

  log "Letting $API_SA invoke $BACKEND_SERVICE (this service only)"
  retry run gcloud run services add-iam-policy-binding "$BACKEND_SERVICE" \
    --project="$PROJECT_ID" --region="$REGION" \
    --member="serviceAccount:$API_SA" --role=roles/run.invoker --format=none --quiet

  BACKEND_URL="$(service_url "$BACKEND_SERVICE")"
  if [[ "$DRY_RUN" != true && "$BACKEND_URL" != https://* ]]; then
    die "could not read the URL of $BACKEND_SERVICE (got '$BACKEND_URL')"
  fi

  log "Deploying $API_SERVICE (public REST, BACKEND_URL=$BACKEND_URL)"
  if [[ "$MODE" == yaml ]]; then
    deploy_api_with_yaml
  else
    deploy_api_with_flags
  fi

  local api_url
  api_url="$(service_url "$API_SERVICE")"
  if [[ "$DRY_RUN" == true ]]; then
    return 0
  fi
  cat <<EOF

Backend (private, gRPC): $BACKEND_URL
API (public, REST):      $api_url

Try it:
  curl -X POST "$api_url/greet" -H 'content-type: application/json' -d '{"name":"David"}'
A 502 permission_denied in the first minutes is IAM taking the new binding in (up to 7 minutes).
EOF
}

main "$@"
