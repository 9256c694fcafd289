// Validates custom resources against the upstream CRD schemas that the @kubernetes-models
// packages compile (KEDA, Prometheus Operator). deploy/validate pipes a JSON array of
// {id, object} on stdin and reads back [{id, errors: [message, ...]}] on stdout; a kind without a
// model here comes back with `unsupported: true` (deploy/validate decides what that means).

const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function check({ id, object }) {
  const [group, version] = String(object.apiVersion ?? "").split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !version) return { id, unsupported: true, errors: [] };
  let Model;
  try {
    Model = (await import(`${pkg}/${group}/${version}/${object.kind}`))[object.kind];
  } catch {
    return { id, unsupported: true, errors: [] };
  }
  try {
    new Model(object).validate();
    return { id, errors: [] };
  } catch (e) {
    // The models throw one ValidationError whose message lists every violation
    // ("data/spec/x must be integer, data/spec must have required property 'y'").
    return { id, errors: [String(e.message ?? e)] };
  }
}

const input = await readStdin();
const results = await Promise.all(input.map(check));
process.stdout.write(JSON.stringify(results));
