// The web app in headless Chromium against a real rusher serving it (--static-dir dist): sign-in, chat
// between two people, two editors converging, a geofence on the map, and a server restart. Every page
// fails the test on a console error or warning, or on a request to anything but this server.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { Rusher, openSocket, join, pushOk, within } from "../../../tests/js/server.mjs";
import { launchChromium, watchPage } from "../../../tests/js/browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(here, "../dist");
const RESULTS = path.resolve(here, "../test-results");
/** Bound on any single wait in the browser. */
const WAIT = 10_000;

let server;
let browser;
/** While true, the connection failures a stopped server causes are expected in the console. */
let serverDown = false;
const CONNECTION_FAILURE = /WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED/;

before(async () => {
  assert.ok(existsSync(path.join(DIST, "index.html")), `${DIST} is missing: run npm run build first`);
  mkdirSync(RESULTS, { recursive: true });
  server = await new Rusher({ args: ["--static-dir", DIST] }).start();
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (server) rmSync(server.dir, { recursive: true, force: true });
});

/** A signed-in user in a browser context of their own; problems found on the page collect in `problems`. */
async function person(t, name, urlPath = "/") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const origin = `127.0.0.1:${server.port}`;
  const isLocal = (url) => url.startsWith(`http://${origin}/`) || url.startsWith(`ws://${origin}/`) || url.startsWith("data:");
  const problems = watchPage(page, { isLocal, warnings: true, excused: (text) => serverDown && CONNECTION_FAILURE.test(text) });
  t.after(() => assert.deepEqual(problems, [], `${name}'s page`));
  await page.goto(`${server.httpUrl}${urlPath}`, { timeout: WAIT });
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await connected(page);
  return page;
}

function connected(page) {
  return page.locator('[data-testid="connection-state"]', { hasText: "Connected" }).waitFor({ timeout: WAIT });
}

function shot(page, name) {
  return page.screenshot({ path: path.join(RESULTS, `${name}.png`) });
}

test("two people chat: presence, typing, messages both ways and older pages", { timeout: 60_000 }, async (t) => {
  const alice = await person(t, "alice", "/chat/tea");
  const bob = await person(t, "bob", "/chat/tea");
  for (const page of [alice, bob]) {
    for (const who of ["alice", "bob"]) await page.locator(`.presence li[data-user="${who}"]`).waitFor({ timeout: WAIT });
  }

  await alice.getByLabel("Message").pressSequentially("hello b", { delay: 20 });
  await bob.getByText("alice is typing…").waitFor({ timeout: WAIT });
  await alice.getByLabel("Message").pressSequentially("ob", { delay: 20 });
  await alice.getByRole("button", { name: "Send" }).click();
  await bob.locator(".message", { hasText: "hello bob" }).waitFor({ timeout: WAIT });
  // Sending ends the typing indicator at once.
  await bob.getByText("alice is typing…").waitFor({ state: "hidden", timeout: WAIT });
  await bob.getByLabel("Message").fill("hi alice");
  await bob.getByLabel("Message").press("Enter");
  await alice.locator(".message", { hasText: "hi alice" }).waitFor({ timeout: WAIT });
  const bodies = (page) => page.locator(".message .body").allInnerTexts();
  assert.deepEqual(await bodies(alice), ["hello bob", "hi alice"]);
  assert.deepEqual(await bodies(bob), ["hello bob", "hi alice"]);
  await shot(alice, "chat-alice");

  // A room with more history than a join returns: older pages come on demand, in order.
  const socket = openSocket(t, server, { params: { user: "archivist" } });
  const archive = socket.channel("room:archive", {});
  await join(archive);
  for (let i = 1; i <= 60; i++) await pushOk(archive, "new_msg", { body: `old ${i}` });
  await alice.getByLabel("New room").fill("Archive");
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.locator(".message", { hasText: "old 60" }).waitFor({ timeout: WAIT });
  assert.equal(await alice.locator(".message").count(), 50);
  assert.equal(new URL(alice.url()).pathname, "/chat/archive");
  await alice.getByRole("button", { name: "Load older messages" }).click();
  await alice.getByText("Start of #archive").waitFor({ timeout: WAIT });
  assert.deepEqual(await bodies(alice), Array.from({ length: 60 }, (_, i) => `old ${i + 1}`));
  await shot(alice, "chat-history");
});

test("two editors converge, formatting included, and each sees the other's cursor", { timeout: 60_000 }, async (t) => {
  const alice = await person(t, "alice", "/doc/plan");
  const bob = await person(t, "bob", "/doc/plan");
  for (const page of [alice, bob]) await page.getByTestId("doc-status").filter({ hasText: "Synced" }).waitFor({ timeout: WAIT });
  const editorA = alice.locator(".ql-editor");
  const editorB = bob.locator(".ql-editor");

  await editorA.click();
  await alice.keyboard.type("Hello world");
  await bob.locator(".ql-editor", { hasText: "Hello world" }).waitFor({ timeout: WAIT });
  // alice makes "Hello" bold; bob adds an italic word at the end.
  await editorA.press("Control+Home");
  for (let i = 0; i < 5; i++) await editorA.press("Shift+ArrowRight");
  await editorA.press("Control+b");
  await editorB.click();
  await editorB.press("Control+End");
  await bob.keyboard.type(" together");
  for (let i = 0; i < "together".length; i++) await editorB.press("Shift+ArrowLeft");
  await editorB.press("Control+i");

  const expected = "<p><strong>Hello</strong> world <em>together</em></p>";
  const html = (page) => page.locator(".ql-editor").innerHTML();
  await within(WAIT, (async () => {
    while ((await html(alice)) !== expected || (await html(bob)) !== expected) await new Promise((r) => setTimeout(r, 100));
  })(), `both editors to show ${expected}; alice ${await html(alice)}, bob ${await html(bob)}`);

  // Each editor draws the other's cursor, labelled with the name, in the other's colour.
  await alice.locator(".ql-cursor .ql-cursor-name", { hasText: "bob" }).waitFor({ state: "attached", timeout: WAIT });
  await bob.locator(".ql-cursor .ql-cursor-name", { hasText: "alice" }).waitFor({ state: "attached", timeout: WAIT });
  const caretColor = (page) => page.locator(".ql-cursor-caret").first().evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(await caretColor(alice), await caretColor(bob));
  await alice.locator('.editor-name[data-user="bob"]').waitFor({ timeout: WAIT });
  await shot(alice, "editor-alice");
  await shot(bob, "editor-bob");

  // The server holds the same text.
  const text = await (await fetch(`${server.httpUrl}/collab/plan/text?user=check`)).text();
  assert.equal(text.trim(), "Hello world together");
});

test("a circle drawn on the map lights up with an enter event when the car is moved into it", { timeout: 60_000 }, async (t) => {
  const alice = await person(t, "alice", "/map");
  const watcher = await person(t, "carol", "/map");
  const map = alice.getByTestId("geo-map");
  await map.waitFor({ timeout: WAIT });
  const box = await map.boundingBox();
  const cx = box.x + box.width * 0.3;
  const cy = box.y + box.height * 0.4;

  await alice.getByLabel("Fence name").fill("Depot");
  await alice.getByRole("button", { name: "Draw circle" }).click();
  await alice.mouse.move(cx, cy);
  await alice.mouse.down();
  await alice.mouse.move(cx + 40, cy, { steps: 5 });
  await alice.mouse.move(cx + 80, cy, { steps: 5 });
  await alice.mouse.up();
  await alice.locator('.fence[data-fence="Depot"]').waitFor({ timeout: WAIT });

  await alice.getByRole("button", { name: "Move my car" }).click();
  await alice.mouse.click(box.x + box.width * 0.8, box.y + box.height * 0.8);
  await alice.locator('.object.mine[data-object="alice/car"]').waitFor({ timeout: WAIT });
  await alice.mouse.click(cx + 10, cy + 10);
  const enter = '.event[data-event="enter"][data-fence="Depot"][data-object="alice/car"]';
  await alice.locator(enter).waitFor({ timeout: WAIT });
  await alice.locator('.fence.occupied[data-fence="Depot"]').waitFor({ timeout: WAIT });
  await alice.locator('.fence.flash-enter[data-fence="Depot"]').waitFor({ state: "attached", timeout: WAIT });
  // Another member of the tenant sees the event, the fence and the car.
  await watcher.locator(enter).waitFor({ timeout: WAIT });
  await watcher.locator('.fence[data-fence="Depot"]').waitFor({ timeout: WAIT });
  await watcher.locator('.object[data-object="alice/car"]').waitFor({ timeout: WAIT });
  await shot(alice, "map-enter");

  await alice.mouse.click(box.x + box.width * 0.8, box.y + box.height * 0.8);
  await alice.locator('.event[data-event="exit"][data-fence="Depot"]').waitFor({ timeout: WAIT });
  await alice.locator('.fence.occupied[data-fence="Depot"]').waitFor({ state: "detached", timeout: WAIT });
});

test("after a server restart the app reconnects, keeps the history and messages flow again", { timeout: 90_000 }, async (t) => {
  const alice = await person(t, "alice", "/chat/restart");
  const bob = await person(t, "bob", "/chat/restart");
  await bob.getByLabel("Message").fill("before the restart");
  await bob.getByLabel("Message").press("Enter");
  await alice.locator(".message", { hasText: "before the restart" }).waitFor({ timeout: WAIT });

  serverDown = true;
  await server.stop("SIGKILL");
  for (const page of [alice, bob]) {
    await page.locator('[data-testid="connection-state"]', { hasText: "Reconnecting…" }).waitFor({ timeout: WAIT });
    await page.getByRole("alert").filter({ hasText: "reconnecting" }).waitFor({ timeout: WAIT });
  }
  await shot(alice, "restart-reconnecting");
  await server.start();
  // Development tokens die with the process that signed them: the app signs in again by itself.
  for (const page of [alice, bob]) await connected(page);
  serverDown = false;
  await alice.getByRole("alert").filter({ hasText: "reconnecting" }).waitFor({ state: "hidden", timeout: WAIT });

  await alice.getByLabel("Message").fill("after the restart");
  await alice.getByLabel("Message").press("Enter");
  await bob.locator(".message", { hasText: "after the restart" }).waitFor({ timeout: WAIT });
  // A fresh page loads the history from the database file the new process opened.
  await bob.reload();
  await bob.locator(".message", { hasText: "after the restart" }).waitFor({ timeout: WAIT });
  assert.deepEqual(await bob.locator(".message .body").allInnerTexts(), ["before the restart", "after the restart"]);
  await shot(bob, "restart-recovered");
});
