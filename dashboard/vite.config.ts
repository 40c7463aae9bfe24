import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The build goes into the Python package, which serves it at /dashboard/. File names are fixed
// (no content hashes) so that a rebuild from the same sources gives the same files, which CI
// compares with the committed ones. COSTWARDEN_DASHBOARD_OUT sends a check build elsewhere.
const outDir =
  process.env.COSTWARDEN_DASHBOARD_OUT ??
  fileURLToPath(new URL("../src/costwarden/dashboard/static", import.meta.url));

export default defineConfig({
  base: "/dashboard/",
  plugins: [react()],
  build: {
    outDir,
    emptyOutDir: true,
    target: "es2020",
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 800,
    rolldownOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
});
