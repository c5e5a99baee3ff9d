// Builds the app into dist/, which rusher serves (its default --static-dir is clients/web/dist).
// @rusher/client is the package one directory up, taken from source: no separate build or install.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const RUSHER = process.env.RUSHER_URL ?? "http://127.0.0.1:4000";

export default defineConfig({
  resolve: {
    alias: { "@rusher/client": fileURLToPath(new URL("../src/index.js", import.meta.url)) },
    // @rusher/client's own imports must resolve here, to the one copy of each this app pins: two copies
    // of yjs in one page break its type checks.
    dedupe: ["phoenix", "yjs", "y-websocket", "y-protocols", "lib0"],
  },
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  // `npm run dev` serves the app with hot reload and forwards the server's paths to a running rusher.
  server: {
    proxy: {
      "/dev/token": RUSHER,
      "/socket": { target: RUSHER, ws: true },
      "/collab": { target: RUSHER, ws: true },
    },
  },
});
