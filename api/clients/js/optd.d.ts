// optd.d.ts: TypeScript declarations for optd.js, the JavaScript client of
// the optd HTTP API (docs/API.md).  Option names are camelCase; the names
// inside `hyperparameters` and `schedule` are the API's (PyTorch's).

export type Dtype = "float32" | "float64";
export type OptimizerName =
  | "sgd" | "adagrad" | "rmsprop" | "adam" | "adamw" | "adamax" | "nadam" | "radam" | "adadelta" | "lion" | "sparse_adam";
export type Vector = number[] | Float32Array | Float64Array;

export type Hyperparameters = Record<string, number | boolean | [number, number]>;

export interface Schedule {
  type: "constant" | "step" | "exponential" | "cosine";
  step_size?: number;
  gamma?: number;
  t_max?: number;
  eta_min?: number;
  warmup_steps?: number;
}

export interface Group {
  size: number;
  hyperparameters: Hyperparameters;
}

export interface Aggregate {
  workers: number;
  reduce?: "mean" | "sum";
  max_staleness?: number;
}

export interface Round {
  step: number;
  contributions: number;
  workers: string[];
}

export interface Descriptor {
  name: string;
  optimizer: OptimizerName;
  dtype: Dtype;
  size: number;
  step: number;
  hyperparameters: Hyperparameters;
  groups: Group[] | null;
  schedule: Schedule | null;
  max_grad_norm: number | null;
  labels: Record<string, string>;
  ttl_seconds: number | null;
  aggregate?: Required<Aggregate> | null;
  round?: Round | null;
  created_at: string;
  updated_at: string;
  [field: string]: unknown;
}

export interface StateDocument extends Descriptor {
  params: number[];
  state: Record<string, number[] | number>;
}

export interface HistoryEntry {
  step: number;
  lr: number;
  grad_norm: number;
  loss?: number;
  time: string;
}

export interface ClientOptions {
  token?: string | null;
  timeoutMs?: number;
  retries?: number;
  backoffMs?: number;
}

export interface ConfigOptions {
  hyperparameters?: Hyperparameters;
  schedule?: Schedule | null;
  maxGradNorm?: number | null;
  labels?: Record<string, string>;
  ttlSeconds?: number | null;
}

export interface CreateOptions extends ConfigOptions {
  params?: Vector;
  size?: number;
  from?: string;
  dtype?: Dtype;
  groups?: { size: number; hyperparameters?: Hyperparameters }[];
  aggregate?: Aggregate;
  usePost?: boolean;
  rowSize?: number;
}

export interface PatchOptions extends ConfigOptions {
  groups?: { hyperparameters?: Hyperparameters }[];
  aggregate?: Aggregate | null;
}

export interface ParamsOptions {
  minStep?: number;
  wait?: number;
}

export interface ContributeOptions {
  loss?: number;
  wait?: number;
}

export type Contribution<P> =
  | { applied: true; step: number; params: P | null }
  | { applied: false; step: number | null; round: Round | null };

export interface WorkerOptions {
  wait?: number;
  binary?: boolean;
}

export declare class Worker {
  constructor(client: Client, session: string, name: string, options?: WorkerOptions);
  readonly client: Client;
  readonly session: string;
  readonly name: string;
  wait: number;
  binary: boolean;
  step: number | null;
  params: number[] | Float32Array | Float64Array | null;
  pushes: number;
  applied: number;
  refused: number;
  pending: number;
  pull(options?: ParamsOptions): Promise<{ step: number; params: number[] | Float32Array | Float64Array }>;
  push(gradient: Vector, options?: { loss?: number }): Promise<boolean>;
}

export interface StepOptions {
  expectStep?: number;
  loss?: number;
  returnParams?: boolean;
}

export interface StepResult<P> {
  step: number;
  params: P | null;
}

export declare class OptdError extends Error {
  status: number | null;
  code: string;
  apiMessage: string;
  currentStep?: number;
  body?: unknown;
  attempts: number;
}

export declare class Client {
  constructor(baseUrl?: string, options?: ClientOptions);
  readonly baseUrl: string;
  static path(name: string, tail?: string): string;
  health(): Promise<{ status: string }>;
  metrics(): Promise<string>;
  optimizers(): Promise<{ name: OptimizerName; hyperparameters: Hyperparameters }[]>;
  create(name: string, optimizer?: OptimizerName | null, options?: CreateOptions): Promise<Descriptor>;
  fork(source: string, name: string, options?: ConfigOptions): Promise<Descriptor>;
  listSessions(options?: { limit?: number; after?: string; prefix?: string;
    labels?: Record<string, string> | string[]; sort?: "name" | "best_loss" | "last_loss"; offset?: number }):
    Promise<{ sessions: Descriptor[]; next_after: string | null; next_offset: number | null }>;
  iterSessions(options?: { prefix?: string; labels?: Record<string, string> | string[];
    pageSize?: number }): AsyncGenerator<Descriptor>;
  get(name: string): Promise<Descriptor>;
  patch(name: string, options?: PatchOptions): Promise<Descriptor>;
  delete(name: string): Promise<void>;
  params(name: string, options?: { binary?: false } & ParamsOptions): Promise<{ step: number; params: number[] }>;
  params(name: string, options: { binary: true } & ParamsOptions):
    Promise<{ step: number; params: Float32Array | Float64Array }>;
  contribute(name: string, worker: string, step: number, gradient: Float32Array,
    options?: ContributeOptions): Promise<Contribution<Float32Array>>;
  contribute(name: string, worker: string, step: number, gradient: Float64Array,
    options?: ContributeOptions): Promise<Contribution<Float64Array>>;
  contribute(name: string, worker: string, step: number, gradient: number[],
    options?: ContributeOptions): Promise<Contribution<number[]>>;
  worker(session: string, name: string, options?: WorkerOptions): Promise<Worker>;
  step(name: string, gradient: Float32Array, options?: StepOptions): Promise<StepResult<Float32Array>>;
  step(name: string, gradient: Float64Array, options?: StepOptions): Promise<StepResult<Float64Array>>;
  step(name: string, gradient: number[], options?: StepOptions): Promise<StepResult<number[]>>;
  setParams(name: string, params: Vector, options?: { expectStep?: number }): Promise<number>;
  steps(items: { session: string; gradient: Vector; step?: number; loss?: number; rows?: number[] }[],
    options?: { returnParams?: boolean }): Promise<({ session: string; step: number; params?: number[]; rows?: number[] } |
    { session: string; error: { code: string; message: string; current_step?: number } })[]>;
  stepRows(name: string, rows: number[], gradient: Float32Array, options?: StepOptions): Promise<StepResult<Float32Array>>;
  stepRows(name: string, rows: number[], gradient: Float64Array, options?: StepOptions): Promise<StepResult<Float64Array>>;
  stepRows(name: string, rows: number[], gradient: number[], options?: StepOptions): Promise<StepResult<number[]>>;
  readRows(name: string, rows: number[], options?: { binary?: false }): Promise<{ step: number; params: number[] }>;
  readRows(name: string, rows: number[], options: { binary: true }): Promise<{ step: number; params: Float32Array | Float64Array }>;
  history(name: string, options?: { limit?: number; afterStep?: number }): Promise<HistoryEntry[]>;
  exportState(name: string): Promise<StateDocument>;
  importState(name: string, doc: Partial<StateDocument>): Promise<{ created: boolean; body: Descriptor | null }>;
}

export declare function listAcross(clients: Client[], options?: { prefix?: string;
  labels?: Record<string, string> | string[]; pageSize?: number }): Promise<Descriptor[]>;
