// Two members of a group chat, in two browser contexts of Debian's Chromium:
// alice wraps and pays a lucky packet, shares its link, bob and alice open
// it, both see the claims and the best-luck crown, and each wallet shows the
// claim after the host's settle tick. Prints the claims as JSON for the Rust
// test (tests/host/tests/demo.rs) to check against the API.
//   node demo.mjs http://127.0.0.1:PORT screenshot.png
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const TOTAL_FEN = 888;
const problems = [];

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const member = async (name) => {
    const context = await browser.newContext({ viewport: { width: 760, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    page.on("pageerror", (e) => problems.push(`${name}: ${e.message}`));
    // Chromium logs every 4xx fetch as a console error; the page shows the
    // API's itself, and a page file that fails to load is caught here.
    page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(`${name} console: ${m.text()}`));
    page.on("response", (r) => new URL(r.url()).pathname.startsWith("/demo") && r.status() !== 200 && problems.push(`${name}: ${r.status()} for ${r.url()}`));
    return page;
  };
  const signIn = async (page, name) => {
    await page.fill("#name", name);
    await page.click("#sign-in button");
    await page.waitForSelector("#room:not([hidden])");
    check((await page.textContent("#me")) === name, `${name} is signed in`);
  };
  const alice = await member("alice");
  const bob = await member("bob");

  await alice.goto(`${base}/demo/`);
  await signIn(alice, "alice");
  await alice.selectOption("#kind", "lucky");
  await alice.fill("#total", (TOTAL_FEN / 100).toFixed(2));
  await alice.fill("#count", "2");
  await alice.fill("#greeting", "新年快乐 Happy New Year");
  await alice.click("#send");
  const link = await alice.locator(".share-link").first().getAttribute("href");
  const packet = new URL(link).hash.replace("#p=", "");
  check((await alice.textContent(".bubble .state")).includes("2 of 2 left"), "the paid packet waits for 2 members");

  await bob.goto(link);
  await signIn(bob, "bob");
  await bob.locator(".bubble").first().click();
  await bob.waitForSelector("[data-mine]");
  await alice.locator(".bubble").first().click();
  await alice.waitForSelector("[data-mine]");

  const claims = {};
  for (const [name, page] of [["alice", alice], ["bob", bob]]) {
    await page.waitForSelector(".best-luck");
    await page.waitForSelector('.bubble .state[data-status="exhausted"]');
    const seen = await page.$$eval(".claims li", (items) =>
      items.map((li) => ({ user: li.dataset.user, amount_fen: Number(li.dataset.amount) })));
    check(seen.length === 2, `${name} sees 2 claims`);
    check(seen.reduce((sum, c) => sum + c.amount_fen, 0) === TOTAL_FEN, `${name}'s claims sum to the total`);
    check((await page.$$(".best-luck")).length === 1, `${name} sees one crown`);
    claims[name] = seen;
    const mine = Number(await page.getAttribute("[data-mine]", "data-mine"));
    check(seen.find((c) => c.user === name).amount_fen === mine, `${name}'s own amount is in the list`);
    // The host's settle tick credits the claim; the page polls the wallet.
    await page.waitForFunction((fen) => document.querySelector("#balance").dataset.fen === String(fen), mine);
    check((await page.getAttribute("#error", "data-count")) === "0", `${name} saw no error`);
  }
  check(JSON.stringify(claims.alice) === JSON.stringify(claims.bob), "both members see the same claims");
  await alice.screenshot({ path: screenshot, fullPage: true });

  // An API error is shown in words, not swallowed.
  await bob.fill("#join-id", `${base}/demo/#p=${packet.slice(0, -3)}zzz`);
  await bob.click("#join button");
  await bob.waitForSelector("#error:not([hidden])");
  const words = await bob.textContent("#error");
  check(words.includes("not_found"), `the error names its code: ${words}`);
  check((await bob.$$(".bubble")).length === 1, "no bubble for a packet that is not there");

  check(problems.length === 0, `no page errors: ${problems.join("; ")}`);
  console.log(JSON.stringify({ packet, claims: claims.alice }));
} finally {
  await browser.close();
}
