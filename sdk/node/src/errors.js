// Errors of the hwsign Node SDK. Every error derives from HwsignError; an agent refusal keeps the
// agent's stable code (AgentError.code), a verifier challenge its code and parameters.

/** Base class of every hwsign error. */
export class HwsignError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The agent refused the call with {"error": {"code", "message"}} (docs/PROTOCOL.md §10). */
export class AgentError extends HwsignError {
  constructor(code, message, status) {
    super(`the hwsign agent refused the call (${code}, HTTP ${status}): ${message}`);
    this.code = code;
    this.agentMessage = message;
    this.status = status;
  }
}

/** The agent's socket could not be reached, or the exchange broke off or timed out. */
export class AgentUnavailableError extends HwsignError {}

/**
 * The agent's socket (or its directory) belongs to a uid that is not trusted to be the agent, or
 * its directory can be written by others: someone may have put their own socket in the agent's
 * place. Nothing was sent.
 */
export class UntrustedAgentError extends HwsignError {
  constructor(path, uid, trusted, reason) {
    super(`refusing the agent socket ${path}: ${reason} (trusted uids: ${trusted.join(', ')}; set agentUid or HWSIGN_AGENT_UID)`);
    this.path = path;
    this.uid = uid;
    this.trusted = trusted;
  }
}

/** The agent's answer is not what the agent API defines. */
export class AgentProtocolError extends HwsignError {}

/** The request cannot be described to the agent unambiguously. */
export class SigningRequestError extends HwsignError {}

/** A request body exceeds the bound of what is buffered to be hashed. */
export class BodyTooLargeError extends HwsignError {
  constructor(limit) {
    super(`the request body exceeds the limit of ${limit} bytes`);
    this.limit = limit;
  }
}

/**
 * The verifier answered 401 with `WWW-Authenticate: HWS1 error="attestation_required"` or
 * `"step_up_required"`: signing again does not satisfy it by itself.
 */
export class VerifierChallenge extends HwsignError {
  constructor(code, params, status, response) {
    super(`the verifier asks for ${code} (HTTP ${status})`);
    this.code = code;
    this.params = params;
    this.status = status;
    this.response = response;
  }

  /** The challenge's nonce parameter, if any. */
  get nonce() {
    return this.params.nonce;
  }
}

/** 401 attestation_required: fresh attestation evidence is wanted for the key. */
export class AttestationRequired extends VerifierChallenge {}

/** 401 step_up_required: the route needs a stronger key than the one that signed. */
export class StepUpRequired extends VerifierChallenge {}

export const CHALLENGES = {
  attestation_required: AttestationRequired,
  step_up_required: StepUpRequired,
};
