// deploy/deploy.sh and deploy/teardown.sh against fake gcloud and docker executables
// (test/fixtures/fake-gcloud): no Google account, no network. The fakes log every call and keep the
// created resources in a state file, so the tests can check both the commands and their outcome.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { FakeCall } from './fixtures/fake-gcloud/fake-cli.js';

const repoRoot = resolve(import.meta.dirname, '..');
const fakeBin = join(repoRoot, 'test/fixtures/fake-gcloud');
const deployScript = join(repoRoot, 'deploy/deploy.sh');
const teardownScript = join(repoRoot, 'deploy/teardown.sh');

const project = 'demo-project';
const imageRepo = `us-central1-docker.pkg.dev/${project}/cloud-run-services/greeter`;
const backendUrl = 'https://greeter-backend-abc123-uc.a.run.app';
const apiUrl = 'https://greeter-api-abc123-uc.a.run.app';
const apiSa = `greeter-api-sa@${project}.iam.gserviceaccount.com`;
const backendSa = `greeter-backend-sa@${project}.iam.gserviceaccount.com`;
const telemetryRoles = [
  'roles/serviceusage.serviceUsageConsumer',
  'roles/telemetry.metricsWriter',
  'roles/telemetry.tracesWriter',
];
const slow = { timeout: 60_000 };

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
  calls: FakeCall[];
}

interface FakeState {
  repositories: string[];
  serviceAccounts: string[];
  projectBindings: { member: string; role: string }[];
  /** Keyed `region/name`. */
  services: Record<string, FakeService>;
}

interface FakeService {
  url: string;
  invokers: string[];
  serviceAccount?: string;
  vpc?: { network?: string; subnetwork?: string; egress?: string };
}

/** The fake's key for a service in the default region. */
const inRegion = (name: string, region = 'us-central1'): string => `${region}/${name}`;

/** A temporary directory holding one fake project's state; runs against it share that state. */
interface Sandbox {
  dir: string;
  runs: number;
}

const sandboxes: Sandbox[] = [];

async function createSandbox(): Promise<Sandbox> {
  const sandbox = { dir: await mkdtemp(join(tmpdir(), 'deploy-test-')), runs: 0 };
  sandboxes.push(sandbox);
  return sandbox;
}

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => rm(s.dir, { recursive: true, force: true })));
});

async function runScript(
  script: string,
  args: string[],
  sandbox: Sandbox,
  extraEnv: Record<string, string> = {},
): Promise<ScriptRun> {
  sandbox.runs += 1;
  const logPath = join(sandbox.dir, `calls-${sandbox.runs}.jsonl`);
  const env = {
    PATH: `${fakeBin}${delimiter}${process.env.PATH ?? ''}`,
    HOME: sandbox.dir,
    TMPDIR: sandbox.dir,
    FAKE_GCLOUD_LOG: logPath,
    FAKE_GCLOUD_STATE: join(sandbox.dir, 'state.json'),
    PROJECT_ID: project,
    DEPLOY_RETRY_DELAY_SECONDS: '0',
    ...extraEnv,
  };
  const { code, stdout, stderr } = await new Promise<Omit<ScriptRun, 'calls'>>((done) => {
    execFile(script, args, { env, timeout: 50_000 }, (error, out, err) => {
      done({
        code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1,
        stdout: out,
        stderr: err,
      });
    });
  });
  const log = await readFile(logPath, 'utf8').catch(() => '');
  const calls = log
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as FakeCall);
  return { code, stdout, stderr, calls };
}

async function deploy(sandbox: Sandbox, ...args: string[]): Promise<ScriptRun> {
  const run = await runScript(deployScript, ['--tag', 'test-tag', ...args], sandbox);
  expect(run.code, run.stderr).toBe(0);
  return run;
}

async function stateOf(sandbox: Sandbox): Promise<FakeState> {
  return JSON.parse(await readFile(join(sandbox.dir, 'state.json'), 'utf8')) as FakeState;
}

const gcloudCalls = (run: ScriptRun): string[][] =>
  run.calls.filter((c) => c.tool === 'gcloud').map((c) => c.argv);

const wordsOf = (argv: string[]): string[] => argv.filter((a) => !a.startsWith('-'));

const isCommand = (argv: string[], ...prefix: string[]): boolean => {
  const words = wordsOf(argv);
  return prefix.every((word, i) => words[i] === word);
};

function flagValue(argv: string[], name: string): string | undefined {
  return argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

function onlyCall(run: ScriptRun, ...prefix: string[]): string[] {
  const hits = gcloudCalls(run).filter((argv) => isCommand(argv, ...prefix));
  expect(hits, prefix.join(' ')).toHaveLength(1);
  return hits[0] ?? [];
}

const deployOf = (run: ScriptRun, service: string): string[] =>
  onlyCall(run, 'run', 'deploy', service);

function envOf(argv: string[]): Record<string, string> {
  const list = flagValue(argv, 'set-env-vars') ?? '';
  return Object.fromEntries(
    list
      .split(',')
      .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
  );
}

/** `grpc.port=8080,periodSeconds=1` → { grpc: { port: 8080 }, periodSeconds: 1 }, like the YAML. */
function probeFromFlag(value: string | undefined): Record<string, unknown> {
  const probe: Record<string, unknown> = {};
  for (const setting of (value ?? '').split(',')) {
    const [key = '', raw = ''] = setting.split('=');
    const parsed = /^\d+$/.test(raw) ? Number(raw) : raw;
    const [outer = '', inner] = key.split('.');
    if (inner === undefined) {
      probe[outer] = parsed;
    } else {
      probe[outer] = { ...(probe[outer] as object | undefined), [inner]: parsed };
    }
  }
  return probe;
}

/** What a Cloud Run service ends up as: the common ground of the flags and the YAML. */
interface ServiceModel {
  name: string;
  image: string;
  serviceAccount: string;
  protocol: string;
  port: number;
  env: Record<string, string>;
  ingress: string;
  /** Cloud Run's Invoker IAM check: 'on' when the deploy asserts it, '?' when it leaves it be. */
  invokerIamCheck: string;
  startupProbe: unknown;
  livenessProbe: unknown;
  cpuThrottling: string;
  cpuBoost: string;
  minScale: string;
  maxScale: string;
  cpu: string;
  memory: string;
  vpcEgress: { networkInterfaces: unknown; egress: string } | null;
}

function modelFromFlags(argv: string[]): ServiceModel {
  const network = flagValue(argv, 'network');
  return {
    name: wordsOf(argv)[2] ?? '',
    image: flagValue(argv, 'image') ?? '',
    serviceAccount: flagValue(argv, 'service-account') ?? '',
    protocol: argv.includes('--use-http2')
      ? 'h2c'
      : argv.includes('--no-use-http2')
        ? 'http1'
        : '?',
    port: Number(flagValue(argv, 'port')),
    env: envOf(argv),
    ingress: flagValue(argv, 'ingress') ?? '',
    invokerIamCheck: argv.includes('--invoker-iam-check')
      ? 'on'
      : argv.includes('--no-invoker-iam-check')
        ? 'off'
        : '?',
    startupProbe: probeFromFlag(flagValue(argv, 'startup-probe')),
    livenessProbe: probeFromFlag(flagValue(argv, 'liveness-probe')),
    cpuThrottling: argv.includes('--no-cpu-throttling')
      ? 'false'
      : argv.includes('--cpu-throttling')
        ? 'true'
        : '?',
    cpuBoost: argv.includes('--cpu-boost') ? 'true' : '?',
    minScale: flagValue(argv, 'min-instances') ?? '',
    maxScale: flagValue(argv, 'max-instances') ?? '',
    cpu: flagValue(argv, 'cpu') ?? '',
    memory: flagValue(argv, 'memory') ?? '',
    vpcEgress:
      network === undefined
        ? null
        : {
            networkInterfaces: [{ network, subnetwork: flagValue(argv, 'subnet') }],
            egress: flagValue(argv, 'vpc-egress') ?? '',
          },
  };
}

interface KnativeService {
  metadata: { name: string; annotations: Record<string, string> };
  spec: {
    template: {
      metadata: { annotations: Record<string, string> };
      spec: {
        serviceAccountName: string;
        containers: {
          image: string;
          ports: { name: string; containerPort: number }[];
          env: { name: string; value: string }[];
          resources: { limits: { cpu: string; memory: string } };
          startupProbe: unknown;
          livenessProbe: unknown;
        }[];
      };
    };
  };
}

function modelFromYaml(doc: KnativeService): ServiceModel {
  const template = doc.spec.template;
  const annotations = template.metadata.annotations;
  expect(template.spec.containers).toHaveLength(1);
  const container = template.spec.containers[0];
  if (container === undefined) throw new Error('no container');
  expect(container.ports).toHaveLength(1);
  const port = container.ports[0];
  const interfaces = annotations['run.googleapis.com/network-interfaces'];
  return {
    name: doc.metadata.name,
    image: container.image,
    serviceAccount: template.spec.serviceAccountName,
    protocol: port?.name ?? '',
    port: port?.containerPort ?? 0,
    env: Object.fromEntries(container.env.map((e) => [e.name, e.value])),
    ingress: doc.metadata.annotations['run.googleapis.com/ingress'] ?? '',
    invokerIamCheck:
      { false: 'on', true: 'off' }[
        doc.metadata.annotations['run.googleapis.com/invoker-iam-disabled'] ?? ''
      ] ?? '?',
    startupProbe: container.startupProbe,
    livenessProbe: container.livenessProbe,
    cpuThrottling: annotations['run.googleapis.com/cpu-throttling'] ?? '',
    cpuBoost: annotations['run.googleapis.com/startup-cpu-boost'] ?? '',
    minScale: annotations['autoscaling.knative.dev/minScale'] ?? '',
    maxScale: annotations['autoscaling.knative.dev/maxScale'] ?? '',
    cpu: container.resources.limits.cpu,
    memory: container.resources.limits.memory,
    vpcEgress:
      interfaces === undefined
        ? null
        : {
            networkInterfaces: JSON.parse(interfaces),
            egress: annotations['run.googleapis.com/vpc-access-egress'] ?? '',
          },
  };
}

function replacedYaml(run: ScriptRun, service: string): KnativeService {
  const docs = run.calls
    .filter((c) => c.tool === 'gcloud' && isCommand(c.argv, 'run', 'services', 'replace'))
    .flatMap((c) => Object.values(c.files ?? {}))
    .map((text) => parse(text) as KnativeService)
    .filter((doc) => doc.metadata.name === service);
  expect(docs, `replace of ${service}`).toHaveLength(1);
  const doc = docs[0];
  if (doc === undefined) throw new Error(`no YAML for ${service}`);
  return doc;
}

describe('deploy.sh, first run in an empty project', () => {
  let sandbox: Sandbox;
  let first: ScriptRun;

  beforeAll(async () => {
    sandbox = await createSandbox();
    first = await deploy(sandbox);
  }, 60_000);

  it('creates the repository and both service accounts, then deploys both roles', async () => {
    const creates = gcloudCalls(first).filter((argv) => wordsOf(argv)[2] === 'create');
    expect(creates.map((argv) => wordsOf(argv).slice(0, 4).join(' '))).toEqual([
      'artifacts repositories create cloud-run-services',
      'iam service-accounts create greeter-backend-sa',
      'iam service-accounts create greeter-api-sa',
    ]);
    const state = await stateOf(sandbox);
    expect(state.repositories).toEqual(['us-central1/cloud-run-services']);
    expect(state.serviceAccounts.sort()).toEqual([apiSa, backendSa]);
    expect(Object.keys(state.services).sort()).toEqual([
      inRegion('greeter-api'),
      inRegion('greeter-backend'),
    ]);
  });

  it('builds and pushes one image and deploys both roles from its digest', () => {
    const docker = first.calls.filter((c) => c.tool === 'docker').map((c) => wordsOf(c.argv)[0]);
    expect(docker).toEqual(['build', 'push']);
    const backendImage = flagValue(deployOf(first, 'greeter-backend'), 'image');
    const apiImage = flagValue(deployOf(first, 'greeter-api'), 'image');
    expect(backendImage).toMatch(new RegExp(`^${imageRepo}@sha256:[0-9a-f]{64}$`));
    expect(apiImage).toBe(backendImage);
  });

  it('sets SERVICE_ROLE, production, request-based telemetry and the project on each service', () => {
    expect(envOf(deployOf(first, 'greeter-backend'))).toEqual({
      SERVICE_ROLE: 'backend',
      GRPC_REFLECTION: 'false',
      DEPLOYMENT_ENVIRONMENT: 'production',
      TELEMETRY_EXPORT_MODE: 'request',
      GOOGLE_CLOUD_PROJECT: project,
    });
    expect(envOf(deployOf(first, 'greeter-api'))).toEqual({
      SERVICE_ROLE: 'api',
      BACKEND_URL: backendUrl,
      DEPLOYMENT_ENVIRONMENT: 'production',
      TELEMETRY_EXPORT_MODE: 'request',
      GOOGLE_CLOUD_PROJECT: project,
    });
    for (const service of ['greeter-backend', 'greeter-api']) {
      expect(deployOf(first, service)).toContain('--cpu-throttling');
    }
  });

  it('makes the backend private h2c with gRPC health probes and the api public HTTP/1.1', () => {
    const backend = deployOf(first, 'greeter-backend');
    const api = deployOf(first, 'greeter-api');
    expect(backend).toContain('--use-http2');
    expect(backend).toContain('--no-allow-unauthenticated');
    expect(backend).not.toContain('--allow-unauthenticated');
    // Re-asserted on every deploy: "Allow public access" in the console switches it off.
    expect(backend).toContain('--invoker-iam-check');
    expect(api).not.toContain('--invoker-iam-check');
    expect(api).not.toContain('--use-http2');
    expect(api).toContain('--allow-unauthenticated');
    expect(flagValue(backend, 'service-account')).toBe(backendSa);
    expect(flagValue(api, 'service-account')).toBe(apiSa);
    expect(probeFromFlag(flagValue(backend, 'startup-probe'))).toMatchObject({
      grpc: { port: 8080 },
    });
    expect(probeFromFlag(flagValue(backend, 'liveness-probe'))).toMatchObject({
      grpc: { port: 8080 },
    });
    expect(flagValue(backend, 'startup-probe')).not.toContain('grpc.service');
    expect(probeFromFlag(flagValue(api, 'startup-probe'))).toMatchObject({
      httpGet: { path: '/healthz', port: 8080 },
    });
    expect(flagValue(backend, 'ingress')).toBe('all');
    expect(flagValue(api, 'ingress')).toBe('all');
    // No VPC for the api, said outright; on this first deploy there is nothing to clear.
    expect(api).toContain('--clear-network');
    expect(flagValue(api, 'network')).toBeUndefined();
  });

  it('lets only the api account invoke the backend, bound on that service, never on the project', async () => {
    const binding = onlyCall(first, 'run', 'services', 'add-iam-policy-binding');
    expect(wordsOf(binding)[3]).toBe('greeter-backend');
    expect(flagValue(binding, 'member')).toBe(`serviceAccount:${apiSa}`);
    expect(flagValue(binding, 'role')).toBe('roles/run.invoker');

    const projectRoles = gcloudCalls(first)
      .filter((argv) => isCommand(argv, 'projects', 'add-iam-policy-binding'))
      .map((argv) => `${flagValue(argv, 'member')} ${flagValue(argv, 'role')}`);
    expect(projectRoles.sort()).toEqual(
      [apiSa, backendSa].flatMap((sa) => telemetryRoles.map((r) => `serviceAccount:${sa} ${r}`)),
    );

    const state = await stateOf(sandbox);
    expect(state.services[inRegion('greeter-backend')]?.invokers).toEqual([
      `serviceAccount:${apiSa}`,
    ]);
    expect(state.services[inRegion('greeter-api')]?.invokers).toEqual(['allUsers']);
  });

  it('deploys the backend, grants the invoker role, reads the URL, then deploys the api', () => {
    const order = gcloudCalls(first).map((argv) => wordsOf(argv).slice(0, 4).join(' '));
    const at = (command: string): number => order.indexOf(command);
    expect(at('run deploy greeter-backend')).toBeGreaterThan(-1);
    expect(at('run deploy greeter-backend')).toBeLessThan(
      at('run services add-iam-policy-binding greeter-backend'),
    );
    expect(at('run services add-iam-policy-binding greeter-backend')).toBeLessThan(
      at('run services describe greeter-backend'),
    );
    expect(at('run services describe greeter-backend')).toBeLessThan(at('run deploy greeter-api'));
  });

  it('never relies on the gcloud configuration for the project or region', () => {
    for (const argv of gcloudCalls(first)) {
      const [group] = wordsOf(argv);
      if (group === 'run') expect(flagValue(argv, 'region'), argv.join(' ')).toBe('us-central1');
      if (group !== 'auth' && group !== 'projects' && !isCommand(argv, 'artifacts', 'docker')) {
        expect(flagValue(argv, 'project'), argv.join(' ')).toBe(project);
      }
    }
  });

  it('prints both URLs and a curl command for the api', () => {
    expect(first.stdout).toContain(`Backend (private, gRPC): ${backendUrl}`);
    expect(first.stdout).toContain(
      `curl -X POST "${apiUrl}/greet" -H 'content-type: application/json' -d '{"name":"David"}'`,
    );
  });

  it('is idempotent: a second run creates nothing and deploys the same way', slow, async () => {
    const second = await deploy(sandbox);
    const creates = gcloudCalls(second).filter((argv) => wordsOf(argv).includes('create'));
    expect(creates).toEqual([]);
    expect(
      gcloudCalls(second).some((argv) => isCommand(argv, 'iam', 'service-accounts', 'describe')),
    ).toBe(true);
    const strip = (argv: string[]) => argv.filter((a) => !a.startsWith('--image='));
    expect(strip(deployOf(second, 'greeter-backend'))).toEqual(
      strip(deployOf(first, 'greeter-backend')),
    );
    expect(strip(deployOf(second, 'greeter-api'))).toEqual(strip(deployOf(first, 'greeter-api')));
    const state = await stateOf(sandbox);
    expect(state.services[inRegion('greeter-backend')]?.invokers).toEqual([
      `serviceAccount:${apiSa}`,
    ]);
  });
});

describe('deploy.sh options', () => {
  it('--dry-run prints every command and runs no gcloud or docker', slow, async () => {
    const sandbox = await createSandbox();
    const run = await deploy(sandbox, '--dry-run');
    expect(run.calls).toEqual([]);
    const lines = run.stdout.split('\n');
    for (const expected of [
      'gcloud services enable ',
      'gcloud artifacts repositories create cloud-run-services ',
      'docker build --platform=linux/amd64 ',
      'docker push ',
      'gcloud iam service-accounts create greeter-backend-sa ',
      'gcloud iam service-accounts create greeter-api-sa ',
      'gcloud projects add-iam-policy-binding ',
      'gcloud run deploy greeter-backend ',
      'gcloud run services add-iam-policy-binding greeter-backend ',
      'gcloud run services describe greeter-backend ',
      'gcloud run deploy greeter-api ',
    ]) {
      expect(
        lines.some((line) => line.startsWith(expected)),
        expected,
      ).toBe(true);
    }
    expect(lines.find((l) => l.startsWith('gcloud run deploy greeter-backend '))).toContain(
      '--use-http2',
    );
  });

  it(
    '--ingress internal: internal backend, api on Direct VPC egress for all traffic',
    slow,
    async () => {
      const run = await deploy(
        await createSandbox(),
        '--ingress',
        'internal',
        '--network',
        'vpc-a',
        '--subnet',
        'subnet-a',
      );
      const backend = deployOf(run, 'greeter-backend');
      const api = deployOf(run, 'greeter-api');
      expect(flagValue(backend, 'ingress')).toBe('internal');
      expect(flagValue(backend, 'network')).toBeUndefined();
      expect(flagValue(api, 'ingress')).toBe('all');
      expect(flagValue(api, 'network')).toBe('vpc-a');
      expect(flagValue(api, 'subnet')).toBe('subnet-a');
      expect(flagValue(api, 'vpc-egress')).toBe('all-traffic');
      // gcloud refuses --clear-network beside --network and --subnet.
      expect(api).not.toContain('--clear-network');
      // Cloud Run's whole startup window: Direct VPC egress can take a minute to connect.
      expect(probeFromFlag(flagValue(api, 'startup-probe'))).toMatchObject({
        httpGet: { path: '/readyz' },
        periodSeconds: 2,
        timeoutSeconds: 2,
        failureThreshold: 120,
      });
      expect(probeFromFlag(flagValue(api, 'liveness-probe'))).toMatchObject({
        httpGet: { path: '/healthz' },
      });
    },
  );

  it(
    '--cpu-always-on: instance-based billing with batched telemetry on both services',
    slow,
    async () => {
      const run = await deploy(await createSandbox(), '--cpu-always-on');
      for (const service of ['greeter-backend', 'greeter-api']) {
        const argv = deployOf(run, service);
        expect(argv).toContain('--no-cpu-throttling');
        expect(argv).not.toContain('--cpu-throttling');
        expect(envOf(argv).TELEMETRY_EXPORT_MODE).toBe('batch');
      }
    },
  );

  it('--build cloud: Cloud Build instead of docker, with its API enabled', slow, async () => {
    const run = await deploy(await createSandbox(), '--build', 'cloud');
    expect(run.calls.filter((c) => c.tool === 'docker')).toEqual([]);
    const submit = onlyCall(run, 'builds', 'submit');
    expect(flagValue(submit, 'tag')).toBe(`${imageRepo}:test-tag`);
    expect(onlyCall(run, 'services', 'enable')).toContain('cloudbuild.googleapis.com');
    expect(flagValue(deployOf(run, 'greeter-api'), 'image')).toMatch(/@sha256:[0-9a-f]{64}$/);
  });

  it('--image: deploys an existing image without a repository or a build', slow, async () => {
    const image = `${imageRepo}@sha256:${'a'.repeat(64)}`;
    const run = await deploy(await createSandbox(), '--image', image);
    expect(run.calls.filter((c) => c.tool === 'docker')).toEqual([]);
    expect(gcloudCalls(run).filter((argv) => isCommand(argv, 'artifacts'))).toEqual([]);
    expect(flagValue(deployOf(run, 'greeter-backend'), 'image')).toBe(image);
    expect(flagValue(deployOf(run, 'greeter-api'), 'image')).toBe(image);
  });

  it(
    '--image by tag: pinned to its digest once, so both services run the same bytes',
    slow,
    async () => {
      const sandbox = await createSandbox();
      const tagged = `${imageRepo}:v1`;
      const digest = `sha256:${'b'.repeat(64)}`;
      const pushed = {
        repositories: [],
        images: { [tagged]: digest },
        builds: 0,
        serviceAccounts: [],
        projectBindings: [],
        services: {},
      };
      await writeFile(join(sandbox.dir, 'state.json'), JSON.stringify(pushed));
      const run = await deploy(sandbox, '--image', tagged);
      expect(run.calls.filter((c) => c.tool === 'docker')).toEqual([]);
      for (const service of ['greeter-backend', 'greeter-api']) {
        expect(flagValue(deployOf(run, service), 'image')).toBe(`${imageRepo}@${digest}`);
      }

      const unknown = await runScript(deployScript, ['--image', `${imageRepo}:nope`], sandbox);
      expect(unknown.code).not.toBe(0);
      expect(unknown.stderr).toContain('could not read the digest');
      expect(gcloudCalls(unknown).filter((argv) => isCommand(argv, 'run', 'deploy'))).toEqual([]);
    },
  );

  it.each([
    { args: ['--ingress', 'internal'], says: '--network and --subnet' },
    { args: ['--ingress', 'internal', '--network', 'n'], says: '--network and --subnet' },
    { args: ['--network', 'n', '--subnet', 's'], says: 'only used with --ingress internal' },
    { args: ['--ingress', 'private'], says: '--ingress must be all or internal' },
    { args: ['--build', 'remote'], says: '--build must be local or cloud' },
    { args: ['--mode', 'terraform'], says: '--mode must be flags or yaml' },
    { args: ['--max-instances', '0'], says: '--max-instances must be a positive integer' },
    { args: ['--tag', 'bad tag'], says: 'not a valid Docker tag' },
    { args: ['--region'], says: 'option --region needs a value' },
    { args: ['--api-service', 'same', '--backend-service', 'same'], says: 'must differ' },
    {
      args: ['--backend-service', 'a-name-that-is-far-too-long-for-an-id'],
      says: 'longer than 30',
    },
    { args: ['--frobnicate'], says: 'unknown option: --frobnicate' },
  ])('rejects $args before calling anything', async ({ args, says }) => {
    const run = await runScript(deployScript, args, await createSandbox());
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(says);
    expect(run.calls).toEqual([]);
  });
});

describe('YAML mode agrees with the flags mode', () => {
  it.each([
    { name: 'default', options: [] },
    { name: 'cpu always on', options: ['--cpu-always-on'] },
    {
      name: 'internal ingress',
      options: ['--ingress', 'internal', '--network', 'vpc-a', '--subnet', 'subnet-a'],
    },
    { name: 'sized', options: ['--memory', '1Gi', '--max-instances', '3'] },
  ])('$name', slow, async ({ options }) => {
    const flagsSandbox = await createSandbox();
    const yamlSandbox = await createSandbox();
    const flagsRun = await deploy(flagsSandbox, ...options);
    const yamlRun = await deploy(yamlSandbox, '--mode', 'yaml', ...options);

    for (const service of ['greeter-backend', 'greeter-api']) {
      expect(modelFromYaml(replacedYaml(yamlRun, service))).toEqual(
        modelFromFlags(deployOf(flagsRun, service)),
      );
    }
    expect(gcloudCalls(yamlRun).filter((argv) => isCommand(argv, 'run', 'deploy'))).toEqual([]);
    const [flagsState, yamlState] = [await stateOf(flagsSandbox), await stateOf(yamlSandbox)];
    expect(yamlState.services).toEqual(flagsState.services);
    expect(yamlState.projectBindings).toEqual(flagsState.projectBindings);
  });

  it('removes public access from a backend that someone opened', slow, async () => {
    const sandbox = await createSandbox();
    await deploy(sandbox, '--mode', 'yaml');
    const statePath = join(sandbox.dir, 'state.json');
    const state = await stateOf(sandbox);
    state.services[inRegion('greeter-backend')]?.invokers.push('allUsers');
    await writeFile(statePath, JSON.stringify(state));

    const again = await deploy(sandbox, '--mode', 'yaml');
    const removal = onlyCall(again, 'run', 'services', 'remove-iam-policy-binding');
    expect(wordsOf(removal)[3]).toBe('greeter-backend');
    expect(flagValue(removal, 'member')).toBe('allUsers');
    expect((await stateOf(sandbox)).services[inRegion('greeter-backend')]?.invokers).toEqual([
      `serviceAccount:${apiSa}`,
    ]);
  });
});

describe('going back from --ingress internal to --ingress all', () => {
  const internal = ['--ingress', 'internal', '--network', 'vpc-a', '--subnet', 'subnet-a'];

  it.each([
    { first: 'flags', second: 'flags' },
    { first: 'yaml', second: 'yaml' },
    { first: 'flags', second: 'yaml' },
    { first: 'yaml', second: 'flags' },
  ])('takes the api off the VPC ($first, then $second)', slow, async ({ first, second }) => {
    const sandbox = await createSandbox();
    await deploy(sandbox, '--mode', first, ...internal);
    expect((await stateOf(sandbox)).services[inRegion('greeter-api')]?.vpc).toEqual({
      network: 'vpc-a',
      subnetwork: 'subnet-a',
      egress: 'all-traffic',
    });

    const back = await deploy(sandbox, '--mode', second);
    if (second === 'flags') {
      const api = deployOf(back, 'greeter-api');
      expect(api).toContain('--clear-network');
      for (const name of ['network', 'subnet', 'vpc-egress']) {
        expect(flagValue(api, name), name).toBeUndefined();
      }
    } else {
      const annotations = replacedYaml(back, 'greeter-api').spec.template.metadata.annotations;
      expect(annotations['run.googleapis.com/network-interfaces']).toBeUndefined();
      expect(annotations['run.googleapis.com/vpc-access-egress']).toBeUndefined();
    }
    const state = await stateOf(sandbox);
    expect(state.services[inRegion('greeter-api')]?.vpc).toBeUndefined();
    expect(state.services[inRegion('greeter-api')]?.serviceAccount).toBe(apiSa);
  });
});

describe('the service templates', () => {
  it.each(['backend.service.yaml', 'api.service.yaml'])(
    '%s documents every placeholder it uses and parses as YAML',
    async (file) => {
      const text = await readFile(join(repoRoot, 'deploy', file), 'utf8');
      const header = text.slice(0, text.indexOf('apiVersion:'));
      const body = text.slice(text.indexOf('apiVersion:'));
      const placeholders = [
        ...new Set([...body.matchAll(/\$\{([A-Z_]+)\}/g)].map((m) => m[1] ?? '')),
      ];
      expect(placeholders.length).toBeGreaterThan(0);
      for (const name of placeholders) {
        expect(header, name).toMatch(new RegExp(`\\b${name}\\b`));
      }
      const doc = parse(text) as KnativeService;
      expect(doc.spec.template.spec.containers[0]?.image).toBe(`\${IMAGE}`);
    },
  );
});

describe('teardown.sh', () => {
  it(
    'deletes the services, bindings and accounts; keeps the repository unless asked',
    slow,
    async () => {
      const sandbox = await createSandbox();
      await deploy(sandbox);

      const run = await runScript(teardownScript, ['--yes'], sandbox);
      expect(run.code, run.stderr).toBe(0);
      let state = await stateOf(sandbox);
      expect(state.services).toEqual({});
      expect(state.serviceAccounts).toEqual([]);
      expect(state.projectBindings).toEqual([]);
      expect(state.repositories).toEqual(['us-central1/cloud-run-services']);

      const withRepository = await runScript(
        teardownScript,
        ['--yes', '--delete-repository'],
        sandbox,
      );
      expect(withRepository.code, withRepository.stderr).toBe(0);
      const deletes = gcloudCalls(withRepository).filter((argv) => wordsOf(argv)[2] === 'delete');
      expect(deletes.map((argv) => wordsOf(argv).slice(0, 3).join(' '))).toEqual([
        'artifacts repositories delete',
      ]);
      state = await stateOf(sandbox);
      expect(state.repositories).toEqual([]);
    },
  );

  it('stops at an error other than "not found", before deleting any account', slow, async () => {
    const sandbox = await createSandbox();
    await deploy(sandbox);
    for (const deny of ['run services describe', 'projects remove-iam-policy-binding']) {
      const run = await runScript(teardownScript, ['--yes'], sandbox, { FAKE_GCLOUD_DENY: deny });
      expect(run.code, deny).not.toBe(0);
      expect(run.stderr).toContain('PERMISSION_DENIED');
      expect(
        gcloudCalls(run).some((argv) => isCommand(argv, 'iam', 'service-accounts', 'delete')),
      ).toBe(false);
      expect((await stateOf(sandbox)).serviceAccounts).toHaveLength(2);
    }
  });

  it(
    'keeps the accounts that same-named services in another region still run as',
    slow,
    async () => {
      const sandbox = await createSandbox();
      await deploy(sandbox);
      await deploy(sandbox, '--region', 'europe-west1');

      const run = await runScript(teardownScript, ['--yes'], sandbox);
      expect(run.code, run.stderr).toBe(0);
      const list = onlyCall(run, 'run', 'services', 'list');
      expect(flagValue(list, 'region'), 'lists every region').toBeUndefined();
      expect(flagValue(list, 'project')).toBe(project);
      expect(run.stderr).toContain('still used by greeter-api (europe-west1)');
      expect(run.stderr).toContain('still used by greeter-backend (europe-west1)');
      expect(
        gcloudCalls(run).filter(
          (argv) =>
            isCommand(argv, 'iam', 'service-accounts', 'delete') ||
            isCommand(argv, 'projects', 'remove-iam-policy-binding'),
        ),
      ).toEqual([]);
      let state = await stateOf(sandbox);
      expect(Object.keys(state.services).sort()).toEqual([
        inRegion('greeter-api', 'europe-west1'),
        inRegion('greeter-backend', 'europe-west1'),
      ]);
      expect(state.serviceAccounts.sort()).toEqual([apiSa, backendSa]);
      expect(state.projectBindings).toHaveLength(2 * telemetryRoles.length);

      // The last region's teardown finds no other user and deletes them.
      const last = await runScript(teardownScript, ['--yes', '--region', 'europe-west1'], sandbox);
      expect(last.code, last.stderr).toBe(0);
      state = await stateOf(sandbox);
      expect(state.services).toEqual({});
      expect(state.serviceAccounts).toEqual([]);
      expect(state.projectBindings).toEqual([]);
    },
  );

  it('keeps only the account that another service still runs as', slow, async () => {
    const sandbox = await createSandbox();
    await deploy(sandbox);
    const state = await stateOf(sandbox);
    state.services[inRegion('reports', 'asia-east1')] = {
      url: 'https://reports-abc123-de.a.run.app',
      invokers: [],
      serviceAccount: backendSa,
    };
    await writeFile(join(sandbox.dir, 'state.json'), JSON.stringify(state));

    const run = await runScript(teardownScript, ['--yes'], sandbox);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('still used by reports (asia-east1)');
    const after = await stateOf(sandbox);
    expect(Object.keys(after.services)).toEqual([inRegion('reports', 'asia-east1')]);
    expect(after.serviceAccounts).toEqual([backendSa]);
    expect(after.projectBindings.map((b) => b.member)).toEqual(
      telemetryRoles.map(() => `serviceAccount:${backendSa}`),
    );
  });

  it.each([
    { env: { FAKE_GCLOUD_DENY: 'run services list' }, says: 'PERMISSION_DENIED' },
    { env: { FAKE_GCLOUD_UNREACHABLE: 'asia-east1' }, says: 'some regions did not answer' },
  ])(
    'deletes nothing when the list of services fails or is incomplete ($says)',
    slow,
    async ({ env, says }) => {
      const sandbox = await createSandbox();
      await deploy(sandbox);
      const before = await stateOf(sandbox);

      const run = await runScript(teardownScript, ['--yes'], sandbox, env);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(says);
      expect(run.stderr).toContain('nothing deleted');
      expect(gcloudCalls(run).filter((argv) => wordsOf(argv)[2] === 'delete')).toEqual([]);
      expect(await stateOf(sandbox)).toEqual(before);
    },
  );

  it('--dry-run runs nothing; without --yes and a terminal it refuses', slow, async () => {
    const sandbox = await createSandbox();
    await deploy(sandbox);

    const dry = await runScript(teardownScript, ['--dry-run', '--delete-repository'], sandbox);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.calls).toEqual([]);
    expect(dry.stdout).toContain('gcloud run services delete greeter-api ');
    expect(dry.stdout).toContain('gcloud iam service-accounts delete greeter-backend-sa@');
    expect(dry.stdout).toContain('gcloud artifacts repositories delete cloud-run-services ');
    const list = dry.stdout.split('\n').find((l) => l.startsWith('gcloud run services list '));
    expect(list).toBeDefined();
    expect(list).not.toContain('--region');

    const unconfirmed = await runScript(teardownScript, [], sandbox);
    expect(unconfirmed.code).not.toBe(0);
    expect(unconfirmed.stderr).toContain('pass --yes');
    expect(unconfirmed.calls).toEqual([]);
    expect(Object.keys((await stateOf(sandbox)).services).sort()).toEqual([
      inRegion('greeter-api'),
      inRegion('greeter-backend'),
    ]);
  });
});
