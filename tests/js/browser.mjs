// Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by playwright-core (which cannot
// download browsers here), and a watch on a page for console errors and requests to other hosts.
// It imports nothing, so test packages elsewhere in the repository pass their own playwright-core.

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** As root `--no-sandbox` is required; without the networking flags Chromium calls outside hosts. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Launch Debian's Chromium with `chromium` from playwright-core. */
export function launchChromium(chromium, options = {}) {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000, ...options });
}

/**
 * Record on `page` every console error (and warning, with `warnings`), uncaught page error and request
 * whose URL `isLocal` refuses. Returns the list of problems found so far (it grows). A console message
 * for which `excused(text)` is true is not a problem (e.g. connection failures while a test has the
 * server down on purpose).
 */
export function watchPage(page, { isLocal, excused = () => false, warnings = false }) {
  const problems = [];
  const flagged = new Set(warnings ? ["error", "warning"] : ["error"]);
  page.on("console", (msg) => {
    if (flagged.has(msg.type()) && !excused(msg.text())) problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("request", (req) => {
    if (!isLocal(req.url())) problems.push(`request to ${req.url()}`);
  });
  return problems;
}
