// The hwsign console's only script (served from /console/static/console.js; the CSP allows no
// other): passkey registration and sign-in around navigator.credentials.create/get. The server
// verifies everything; this file only moves bytes between the authenticator and it.
"use strict";

const b64u = {
  encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  },
};

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || "refused"}`);
  }
  return answer;
}

// Shows `text` in #status; `state` (waiting, done, failed) is also its data-state.
function status(text, state) {
  const element = document.getElementById("status");
  if (element) {
    element.textContent = text;
    element.className = state === "failed" ? "error" : "ok";
    element.dataset.state = state;
  }
}

async function signIn() {
  const options = await post("/console/api/sign-in/options", {});
  const publicKey = options.public_key;
  const credential = await navigator.credentials.get({
    publicKey: {
      challenge: b64u.decode(publicKey.challenge),
      rpId: publicKey.rpId,
      timeout: publicKey.timeout,
      userVerification: publicKey.userVerification,
      allowCredentials: [],
    },
  });
  const response = credential.response;
  const answer = await post("/console/api/sign-in", {
    challenge_id: options.challenge_id,
    credential_id: b64u.encode(credential.rawId),
    client_data_json: b64u.encode(response.clientDataJSON),
    authenticator_data: b64u.encode(response.authenticatorData),
    signature: b64u.encode(response.signature),
  });
  window.location.assign(answer.next);
}

async function register() {
  const token = decodeURIComponent(window.location.hash.slice(1));
  if (!token) throw new Error("this page needs a registration link");
  const options = await post("/console/api/register/options", { token });
  const publicKey = options.public_key;
  const credential = await navigator.credentials.create({
    publicKey: {
      ...publicKey,
      challenge: b64u.decode(publicKey.challenge),
      user: { ...publicKey.user, id: b64u.decode(publicKey.user.id) },
    },
  });
  await post("/console/api/register", {
    challenge_id: options.challenge_id,
    client_data_json: b64u.encode(credential.response.clientDataJSON),
    attestation_object: b64u.encode(credential.response.attestationObject),
  });
  // The token is spent: drop it from the address bar and history.
  history.replaceState(null, "", "/console/register");
  status(`Passkey registered for ${options.user}. You can sign in now.`, "done");
  const link = document.createElement("a");
  link.href = "/console/sign-in";
  link.id = "to-sign-in";
  link.textContent = "Sign in";
  document.getElementById("status").after(link);
}

function wire(id, action) {
  const button = document.getElementById(id);
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    status("Waiting for your authenticator…", "waiting");
    try {
      await action();
    } catch (error) {
      status(String(error.message || error), "failed");
    } finally {
      button.disabled = false;
    }
  });
}

wire("sign-in", signIn);
wire("register", register);

// Copy the one-time passkey link on click.
const linkField = document.getElementById("passkey-link");
if (linkField) linkField.addEventListener("focus", () => linkField.select());
