// Independent verifier for the end-to-end tests: the user guide's own snippet, using the svix package.
// Reads a JSON file of [{secret, raw, headers, body}] and prints [{ok, error}] in the same order.
import { readFileSync } from "node:fs";
import { Webhook } from "svix";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = cases.map(({ secret, raw, headers, body }) => {
  // A whsec_ secret is used exactly as the guide shows: new Webhook(secret).
  // A raw secret needs the library's raw-key option.
  const wh = raw ? new Webhook(secret, { format: "raw" }) : new Webhook(secret);
  try {
    wh.verify(body, headers);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: String(err && err.message ? err.message : err) };
  }
});
process.stdout.write(JSON.stringify(results));
