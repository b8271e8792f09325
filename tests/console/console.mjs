// Drives Debian's Chromium (headless) with Playwright for the console_* cargo tests
// (tests/tests/it/console.rs), as client-js/test/browser.mjs does for webauthn_browser_*: a CDP
// virtual authenticator (ctap2, internal, resident keys, user verified, automatic presence) and
// the real `hwsign-verifier serve` console on its admin listener. Prints one JSON line with
// what happened; saves screenshots to HWSIGN_SCREENSHOTS.
//
// usage: node console.mjs <base url> <scenario>
// env: HWSIGN_BROWSER_ENV (playwright-core), HWSIGN_BOOTSTRAP (bootstrap token), HWSIGN_TARGET
// (the session/device a scenario acts on), HWSIGN_DOWNLOAD (where the export goes),
// HWSIGN_VIEWER (the viewer's user name), HWSIGN_SCREENSHOTS (a directory).
import { createRequire } from "node:module";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(join(process.env.HWSIGN_BROWSER_ENV, "package.json"));
const { chromium } = require("playwright-core");

const [base, scenario] = process.argv.slice(2);
const target = process.env.HWSIGN_TARGET || "";
const shots = process.env.HWSIGN_SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "hwsign-console-chromium-"));

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.HWSIGN_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 720 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { scenario, console: [] };
const shot = async (page, name) => {
  await page.screenshot({ path: join(shots, `${scenario}-${name}.png`), fullPage: true });
};

// What a console page refused with: its data-code, or null.
const refusalCode = (page) => page.evaluate(() => document.querySelector("[data-code]")?.dataset.code ?? null);

// Registers a passkey with the token in `link` (a full URL with #token) and signs in.
async function registerAndSignIn(page, link) {
  await page.goto(link);
  await page.click("#register");
  await page.waitForSelector("#status[data-state=done], #status[data-state=failed]");
  const registered = await page.textContent("#status");
  if ((await page.getAttribute("#status", "data-state")) !== "done") throw new Error(`registration: ${registered}`);
  await page.goto(`${base}/console/sign-in`);
  await page.click("#sign-in");
  await Promise.race([
    page.waitForURL(`${base}/console/devices`),
    page.waitForSelector("#status[data-state=failed]").then(async () => {
      throw new Error(`sign-in: ${await page.textContent("#status")}`);
    }),
  ]);
  return registered;
}

// POSTs a form from inside the page (same origin, the session cookie sent): status and code.
const postForm = (page, path, fields) => page.evaluate(async ({ path, fields }) => {
  const response = await fetch(path, { method: "POST", body: new URLSearchParams(fields), redirect: "manual" });
  const text = await response.text();
  const code = new DOMParser().parseFromString(text, "text/html").querySelector("[data-code]")?.dataset.code ?? null;
  return { status: response.status, code };
}, { path, fields });

try {
  const page = await context.newPage();
  page.on("console", (message) => result.console.push(message.text()));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });

  // Not signed in: every page sends to the sign-in page.
  const anonymous = await page.goto(`${base}/console/devices`);
  result.anonymous = { url: page.url(), csp: anonymous.headers()["content-security-policy"] };
  await shot(page, "sign-in");

  result.registered = await registerAndSignIn(page, `${base}/console/register#${process.env.HWSIGN_BOOTSTRAP}`);
  const cookies = await context.cookies();
  result.cookie = cookies.find((c) => c.name === "hwsign_console") || null;
  result.csrf = await page.inputValue("header form input[name=csrf]");

  if (scenario === "tour") {
    const devices = await page.goto(`${base}/console/devices`);
    result.devices_headers = devices.headers();
    result.pages = {};
    for (const name of ["devices", "sessions", "users", "audit", "rules"]) {
      await page.goto(`${base}/console/${name}`);
      result.pages[name] = await page.textContent("main");
      await shot(page, name);
    }
    // The bootstrap token is spent once a passkey exists.
    const again = await page.evaluate(async (token) => {
      const response = await fetch("/console/api/register/options", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
      });
      return { status: response.status, body: await response.json() };
    }, process.env.HWSIGN_BOOTSTRAP);
    result.bootstrap_again = again;
    await page.click("#sign-out");
    await page.waitForURL(`${base}/console/sign-in`);
    await page.goto(`${base}/console/sessions`);
    result.after_sign_out = page.url();
  } else if (scenario === "end_session") {
    await page.goto(`${base}/console/sessions`);
    result.listed = (await page.locator(`tr[data-session="${target}"]`).count()) === 1;
    await shot(page, "sessions");
    await Promise.all([page.waitForURL(`${base}/console/sessions`), page.click(`[data-testid="end-session-${target}"]`)]);
    result.listed_after = (await page.locator(`tr[data-session="${target}"]`).count()) === 1;
  } else if (scenario === "revoke_device") {
    await page.goto(`${base}/console/devices`);
    result.state_before = await page.textContent(`tr[data-device="${target}"] td.state`);
    await Promise.all([page.waitForURL(`${base}/console/devices`), page.click(`[data-testid="revoke-${target}"]`)]);
    result.state_after = await page.textContent(`tr[data-device="${target}"] td.state`);
    await shot(page, "devices-revoked");
  } else if (scenario === "audit_export") {
    // One action's records: the others in between are left out as stand-ins.
    await page.goto(`${base}/console/audit?kind=admin&action=console_sign_in`);
    result.audit_page = await page.textContent("main");
    await shot(page, "audit");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-export")]);
    await download.saveAs(process.env.HWSIGN_DOWNLOAD);
    result.downloaded = download.suggestedFilename();
  } else if (scenario === "viewer") {
    const viewer = process.env.HWSIGN_VIEWER;
    await page.goto(`${base}/console/users`);
    await page.click(`[data-testid="passkey-link-${viewer}"]`);
    const link = await page.inputValue("#passkey-link");
    result.link_is_one_time = link.includes("/console/register#crl_");
    await page.click("#sign-out");
    await page.waitForURL(`${base}/console/sign-in`);
    // The viewer's own authenticator: the admin's passkey is not on it.
    await cdp.send("WebAuthn.clearCredentials", { authenticatorId });
    await registerAndSignIn(page, link);
    result.viewer_role = await page.textContent("header .role");
    const csrf = await page.inputValue("header form input[name=csrf]");
    await page.goto(`${base}/console/devices`);
    await shot(page, "viewer-devices");
    result.devices_buttons = {
      enabled: await page.locator("main button:not([disabled])").count(),
      disabled: await page.locator("main button[disabled]").count(),
      forms: await page.locator("main form").count(),
    };
    await page.goto(`${base}/console/sessions`);
    result.sessions_buttons = {
      enabled: await page.locator("main button:not([disabled])").count(),
      disabled: await page.locator("main button[disabled]").count(),
    };
    // Pressing anyway: a forged form with the viewer's own valid CSRF token.
    result.forged_revoke = await postForm(page, "/console/devices/revoke", { csrf, device: target });
    result.forged_end = await postForm(page, "/console/sessions/end", { csrf, scope: "device", id: target });
    // The link is spent.
    const reused = await page.evaluate(async (token) => {
      const response = await fetch("/console/api/register/options", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
      });
      return { status: response.status, body: await response.json() };
    }, link.split("#")[1]);
    result.link_reused = reused;
  } else if (scenario === "csrf") {
    result.without_token = await postForm(page, "/console/devices/revoke", { device: target });
    result.wrong_token = await postForm(page, "/console/devices/revoke", { csrf: "A".repeat(43), device: target });
    result.sign_out_without_token = await postForm(page, "/console/logout", {});
    // Another origin (127.0.0.1 instead of localhost): no cookie (SameSite=Strict) and the
    // Origin check refuses; a no-cors form POST, its answer opaque.
    const other = base.replace("localhost", "127.0.0.1");
    const crossPage = await context.newPage();
    // A page there without the console's CSP (the health probe), so the fetch is sent at all.
    await crossPage.goto(`${other}/healthz`);
    await crossPage.evaluate(async ({ path, csrf, device }) => {
      await fetch(path, { method: "POST", mode: "no-cors", credentials: "include", body: new URLSearchParams({ csrf, device }) });
    }, { path: `${base}/console/devices/revoke`, csrf: result.csrf, device: target });
    await page.goto(`${base}/console/devices`);
    result.state_after = await page.textContent(`tr[data-device="${target}"] td.state`);
    // The same form with the token is accepted (the refusals above were for the token).
    result.with_token = await postForm(page, "/console/sessions/end", { csrf: result.csrf, scope: "device", id: target });
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
