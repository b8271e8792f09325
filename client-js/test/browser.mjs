// Drives Debian's Chromium (headless) with Playwright for the webauthn_browser_* cargo tests
// (tests/tests/it/webauthn_browser.rs): a CDP virtual authenticator (ctap2, internal, resident
// keys, UV toggled per test, automatic presence), the test page served by the real verifier's
// app, and client-js itself. Prints one JSON line with what happened.
//
// usage: node browser.mjs <base url> <scenario>   (env: HWSIGN_BROWSER_ENV, HWSIGN_TOKEN, HWSIGN_UV)
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(join(process.env.HWSIGN_BROWSER_ENV, "package.json"));
const { chromium } = require("playwright-core");

const [base, scenario] = process.argv.slice(2);
const token = process.env.HWSIGN_TOKEN;
const userVerified = process.env.HWSIGN_UV === "1";
const profile = mkdtempSync(join(tmpdir(), "hwsign-chromium-"));

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.HWSIGN_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { scenario };
try {
  const page = await context.newPage();
  page.on("console", (message) => process.stderr.write(`page: ${message.text()}\n`));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await page.goto(`${base}/`);
  result.registered = await page.evaluate(async (token) => {
    const hwsign = await import("/client-js/index.js");
    return hwsign.register({ token, authenticatorSelection: { residentKey: "preferred", userVerification: "discouraged" } });
  }, token);

  // One signed request in the page: signs `signedBody`, sends `sentBody` (tampering when they differ).
  const call = (path, signedBody, sentBody, userVerification) => page.evaluate(
    async ({ path, signedBody, sentBody, credential, userVerification }) => {
      const hwsign = await import("/client-js/index.js");
      const headers = { "content-type": "application/json" };
      const signed = await hwsign.signRequest(
        { method: "POST", url: path, headers, body: signedBody },
        { credential, audience: "payments", rpId: "localhost", userVerification },
      );
      const response = await fetch(path, { method: "POST", headers: { ...headers, ...signed.headers }, body: sentBody });
      return { status: response.status, body: await response.json(), challenge: response.headers.get("www-authenticate") };
    },
    { path, signedBody, sentBody, credential: result.registered, userVerification },
  );
  const body = JSON.stringify({ amount: 100 });

  // Registered with UV; from here on the authenticator verifies the user or not, per test.
  await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: userVerified });

  if (scenario === "signed_fetch") {
    result.first = await call("/v1/echo", body, body, "preferred");
    result.second = await page.evaluate(async (credential) => {
      const hwsign = await import("/client-js/index.js");
      const fetchSigned = hwsign.signingFetch({ credential, audience: "payments", rpId: "localhost" });
      const response = await fetchSigned("/v1/echo?b=2&a=1", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      return { status: response.status, body: await response.json() };
    }, result.registered);
  } else if (scenario === "tampered_body") {
    result.tampered = await call("/v1/echo", body, JSON.stringify({ amount: 100000 }), "preferred");
  } else if (scenario === "uv_required") {
    result.plain = await call("/v1/echo", body, body, "discouraged").catch((e) => ({ thrown: String(e) }));
    result.admin = await call("/admin/keys/new", body, body, "discouraged").catch((e) => ({ thrown: String(e) }));
  } else if (scenario === "counter_regression") {
    result.first = await call("/v1/echo", body, body, "preferred");
    result.second = await call("/v1/echo", body, body, "preferred");
    // Roll the authenticator's counter back, as a clone made before the last use would be.
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    result.counter_before = credentials[0].signCount;
    await cdp.send("WebAuthn.removeCredential", { authenticatorId, credentialId: credentials[0].credentialId });
    await cdp.send("WebAuthn.addCredential", { authenticatorId, credential: { ...credentials[0], signCount: 0 } });
    result.cloned = await call("/v1/echo", body, body, "preferred");
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
