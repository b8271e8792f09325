// The environment the Rust e2e test (sdk_node_* in tests/tests/it/sdk_node.rs) sets up: a real
// hwsign-agent and a real verifier-protected, OpenAI-shaped API on 127.0.0.1.
function need(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through \`cargo test -p hwsign-e2e --test it sdk_node\``);
  }
  return value;
}

export const env = {
  socket: need('HWSIGN_AGENT_SOCK'),
  api: need('HWSIGN_TEST_API'),
  keyId: need('HWSIGN_TEST_KEY_ID'),
  unregisteredKeyId: need('HWSIGN_TEST_UNREGISTERED_KEY_ID'),
  audience: need('HWSIGN_TEST_AUDIENCE'),
};

export function chat(text, model = 'm') {
  return { model, messages: [{ role: 'user', content: text }] };
}
