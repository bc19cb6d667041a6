/**
 * The flyte-jupyter server extension's REST API (/flyte-jupyter/api/...).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface ISetting {
  value: unknown;
  source: string;
}

export interface ISettingsDoc {
  root_dir: string;
  settings: Record<string, ISetting>;
  fields: Record<string, IField>;
}

/** One setting as the server declares it (flyte_jupyter.core.config.FIELDS). */
export interface IField {
  type: string;
  default: unknown;
  help: string;
  /** Allowed values; empty: any. */
  choices: string[];
  minimum: number | null;
  widget: 'text' | 'select' | 'checkbox' | 'number' | 'list' | 'json';
  /** selection, run, or the executor the field belongs to (e.g. flyte). */
  group: string;
  cli: string | null;
  magic: string | null;
}

export interface IFileEntry {
  path: string;
  size: number;
  mode: string;
  sha256: string;
  reason: string;
}

export interface IPreview {
  digest: string;
  version: string;
  root_dir: string;
  copy_style: string;
  files: IFileEntry[];
  total_bytes: number;
  excluded_secrets: string[];
  warnings: string[];
  /** Pickled size of each input value (previews sliced by the kernel only). */
  values?: Record<string, number>;
}

export interface IRunRow {
  id: string;
  name: string;
  status: string;
  /** The run ended (succeeded, failed or cancelled): the server decides, the sidebar keeps no
   * list of phases. */
  final: boolean;
  digest: string | null;
  version: string;
  image: string | null;
  executor: string;
  created: string;
  started: string | null;
  finished: string | null;
  duration: string;
  error: string | null;
  /** The notebook the run came from, relative to the server root. */
  notebook: string | null;
}

export interface IExportAvailability {
  available: boolean;
  reason: string | null;
}

/** A server error's own message (ResponseError carries it), else the error's text. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export interface IExportJob {
  status: 'running' | 'succeeded' | 'failed';
  log: string[];
  tag: string | null;
  error: string | null;
}

export async function request<T>(
  path: string,
  init: RequestInit = {},
  params: Record<string, string> = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const query = Object.keys(params).length
    ? URLExt.objectToQueryString(params)
    : '';
  const url = URLExt.join(settings.baseUrl, 'flyte-jupyter', 'api', path) + query;
  const response = await ServerConnection.makeRequest(url, init, settings);
  let body: any = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  if (!response.ok) {
    // every endpoint answers errors as {"message": ...}
    throw new ServerConnection.ResponseError(
      response,
      body.message || response.statusText
    );
  }
  return body as T;
}

export function humanSize(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}
