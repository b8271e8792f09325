// Driver of the e2e test `admin_sdks_start_a_new_session_after_session_revoked`
// (tests/tests/it/admin_resession.rs): a client of the Node SDK's signingFetch that sends
// `GET <url>` each time a line `get` arrives on stdin and prints the answer as one JSON line
// ({"status", "body"} or {"error"}), so the test can end sessions and revoke the device between
// two calls.
//
//   node sdk_resession.mjs SDK_DIR URL KEY_ID AUDIENCE   (agent socket from the environment)

import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [sdkDir, url, keyId, audience] = process.argv.slice(2);
const { signingFetch } = await import(pathToFileURL(path.join(sdkDir, 'src/index.js')).href);
const fetch = signingFetch({ keyId, audience });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() !== 'get') continue;
  try {
    const response = await fetch(url);
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    process.stdout.write(`${JSON.stringify({ status: response.status, body })}\n`);
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ error: `${error.name}: ${error.message}` })}\n`);
  }
}
