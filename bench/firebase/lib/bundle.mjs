// (e) Client bundle size: each side's adapter (./adapters/*.mjs) is a minimal app doing the workloads
// (connect, write, listen, geo query) with its SDK and nothing else; esbuild bundles it for browsers,
// minified, and the output is measured raw and gzipped, with how many of its bytes each package takes.

import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const ENTRIES = {
  firebase: fileURLToPath(new URL("./adapters/firebase.mjs", import.meta.url)),
  rusher: fileURLToPath(new URL("./adapters/rusher.mjs", import.meta.url)),
};

/** The esbuild options both bundles are built with (recorded in SETUP.md). */
export const BUNDLE_OPTIONS = {
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  legalComments: "none",
  write: false,
  metafile: true,
  logLevel: "silent",
};

/** The package an input path belongs to (`firebase`, `@firebase/database`, ...), or `app` for our own file. */
function packageOf(input) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  return m ? m[1] : "app";
}

/**
 * The packages of @rusher/client's collaborative-editing helper, which the app does not use but the
 * client's module imports.
 */
export const COLLAB_PACKAGES = ["y-websocket", "yjs"];

/**
 * `{minified_bytes, gzip_bytes, packages: {name: minified bytes}}` of `side`'s app; `external` names
 * packages left out of the bundle.
 */
export async function bundleSize(side, external = []) {
  const result = await build({ ...BUNDLE_OPTIONS, external, entryPoints: [ENTRIES[side]], outfile: `${side}.js` });
  const [file] = result.outputFiles;
  const [output] = Object.values(result.metafile.outputs);
  const packages = {};
  for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
    const name = packageOf(input);
    packages[name] = (packages[name] ?? 0) + bytesInOutput;
  }
  return {
    minified_bytes: file.contents.length,
    gzip_bytes: gzipSync(file.contents, { level: 9 }).length,
    packages: Object.fromEntries(Object.entries(packages).sort(([, a], [, b]) => b - a)),
  };
}
