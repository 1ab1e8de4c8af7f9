// Drives tollgate's approvals page in headless Chromium, as an approver
// would: opens the page, enters the key, waits for the pending action to
// appear (live, from the WebSocket feed), and clicks Approve.
//   node approvals-page.mjs <gateway base URL> <approver key> <tool name>
// Prints "APPROVED <id>" when the page shows the action gone after the click.
import { chromium } from "playwright-core";

const [base, key, tool] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/approvals");
  await page.fill("#key", key);
  await page.click("#connect");
  await page.waitForSelector("#state:text('live')", { timeout: 20000 });
  console.log("CONNECTED");
  const card = page.locator(".card", { has: page.locator(".tool", { hasText: tool }) });
  await card.waitFor({ timeout: 30000 });
  const id = await card.getAttribute("data-id");
  await card.locator(".reason").fill("clicked in the browser");
  await card.locator(".approve").click();
  await card.waitFor({ state: "detached", timeout: 20000 });
  const error = await page.textContent("#error");
  if (error) throw new Error("the page showed an error: " + error);
  console.log("APPROVED " + id);
} finally {
  await browser.close();
}
