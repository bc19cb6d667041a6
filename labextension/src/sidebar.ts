/**
 * The flyte-jupyter sidebar: settings for the active notebook, a preview of what its next
 * run ships, the run history, and export to an image.
 */
import { NotebookPanel, INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { JSONObject, JSONValue } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import {
  IExportJob,
  IPreview,
  IRunRow,
  ISettingsDoc,
  humanSize,
  request
} from './api';

const COPY_STYLES: Record<string, string> = {
  auto: 'auto: the local modules your code imports (lazy imports too)',
  all: 'all: every file under root_dir that .gitignore/.flyteignore allow',
  none: 'none: no code; the image has it (needs a version)'
};

const EDITABLE = [
  'copy_style',
  'root_dir',
  'include',
  'executor',
  'store',
  'image',
  'images',
  'version'
];

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

function section(title: string): [HTMLElement, HTMLElement] {
  const box = el('section', { class: 'fj-section' });
  const heading = el('h3', { class: 'fj-heading' }, title);
  const body = el('div', { class: 'fj-body' });
  box.append(heading, body);
  return [box, body];
}

export class FlyteSidebar extends Widget {
  private notebook: NotebookPanel | null = null;
  private settingsBody: HTMLElement;
  private previewBody: HTMLElement;
  private runsBody: HTMLElement;
  private logsBox: HTMLPreElement;
  private exportBody: HTMLElement;
  private status: HTMLElement;
  private previewTimer = 0;
  private defaults: ISettingRegistry.ISettings | null = null;
  /** The run whose logs are shown: followed while it is still going. */
  private shownRun: string | null = null;
  private runsTimer = 0;

  constructor(tracker: INotebookTracker) {
    super();
    this.id = 'flyte-jupyter-sidebar';
    this.addClass('fj-sidebar');
    this.title.caption = 'flyte-jupyter';
    this.status = el('div', { class: 'fj-status', role: 'status' });
    const [settings, settingsBody] = section('Settings');
    const [preview, previewBody] = section('What the next run ships');
    const [runs, runsBody] = section('Runs');
    const [exporter, exportBody] = section('Export notebook to image');
    this.settingsBody = settingsBody;
    this.previewBody = previewBody;
    this.runsBody = runsBody;
    this.exportBody = exportBody;
    this.logsBox = el('pre', { class: 'fj-logs', 'aria-label': 'run logs' });
    runs.append(this.logsBox);
    this.node.append(this.status, settings, preview, runs, exporter);
    this.buildExport();
    tracker.currentChanged.connect(() => this.follow(tracker.currentWidget));
    this.follow(tracker.currentWidget);
  }

  /** JupyterLab settings: defaults for what a project leaves unset, updated by Apply. */
  useDefaults(settings: ISettingRegistry.ISettings): void {
    this.defaults = settings;
    void this.loadSettings();
  }

  /** The notebook the panel describes. */
  get path(): string | null {
    return this.notebook?.context.path ?? null;
  }

  private follow(panel: NotebookPanel | null): void {
    if (panel === this.notebook) {
      return;
    }
    this.notebook = panel;
    if (panel) {
      panel.context.saveState.connect((_, state) => {
        if (state === 'completed') {
          this.schedulePreview();
        }
      });
      panel.content.activeCellChanged.connect(() => this.schedulePreview());
    }
    this.status.textContent = panel
      ? `Notebook: ${panel.context.path}`
      : 'Open a notebook to see its settings and preview.';
    void this.loadSettings();
    this.schedulePreview();
  }

  protected onAfterAttach(): void {
    void this.refreshRuns();
    this.runsTimer = window.setInterval(() => void this.refreshRuns(), 2000);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.runsTimer);
  }

  // --- settings ---------------------------------------------------------------------

  private async loadSettings(): Promise<void> {
    const body = this.settingsBody;
    body.replaceChildren();
    if (!this.path) {
      return;
    }
    let doc: ISettingsDoc;
    try {
      doc = await request<ISettingsDoc>('settings', {}, { path: this.path });
    } catch (error) {
      body.append(el('p', { class: 'fj-error' }, String(error)));
      return;
    }
    const form = el('form', { class: 'fj-form', 'aria-label': 'flyte-jupyter settings' });
    const inputs: Record<string, HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement> = {};
    for (const key of EDITABLE) {
      const setting = { ...doc.settings[key] };
      const fallback = this.defaults?.user[key];
      if (setting.source === 'default' && fallback !== undefined) {
        setting.value = fallback;
        setting.source = 'JupyterLab settings';
      }
      const id = `fj-setting-${key}`;
      const row = el('div', { class: 'fj-row' });
      row.append(el('label', { for: id }, key.replace('_', ' ')));
      let input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
      if (key === 'copy_style') {
        input = el('select', { id, class: 'jp-mod-styled', name: key });
        for (const [style, text] of Object.entries(COPY_STYLES)) {
          const option = el('option', { value: style }, text);
          input.append(option);
        }
        input.value = String(setting.value);
      } else if (key === 'executor') {
        input = el('select', { id, class: 'jp-mod-styled', name: key });
        for (const name of ['local', 'docker']) {
          input.append(el('option', { value: name }, name));
        }
        input.value = String(setting.value);
      } else if (key === 'images') {
        input = el('textarea', { id, class: 'jp-mod-styled', name: key, rows: '2' });
        const mapping = (setting.value ?? {}) as Record<string, string>;
        input.value = Object.entries(mapping)
          .map(([name, uri]) => `${name}=${uri}`)
          .join('\n');
        input.setAttribute('placeholder', 'reference=image URI, one per line');
      } else {
        input = el('input', { id, class: 'jp-mod-styled', name: key, type: 'text' });
        const value = setting.value;
        input.value = Array.isArray(value) ? value.join(', ') : value == null ? '' : String(value);
        if (key === 'root_dir') {
          input.setAttribute('placeholder', doc.root_dir);
        }
        if (key === 'include') {
          input.setAttribute('placeholder', 'data/*.csv, config/*.yaml');
        }
      }
      inputs[key] = input;
      row.append(input, el('span', { class: 'fj-source' }, `from ${setting.source}`));
      form.append(row);
    }
    const warning = el('p', { class: 'fj-warning', role: 'alert' });
    const apply = el('button', { type: 'submit', class: 'jp-mod-styled jp-mod-accept' }, 'Apply');
    const check = () => {
      const needsVersion = inputs.copy_style.value === 'none' && !inputs.version.value.trim();
      warning.textContent = needsVersion
        ? 'copy style none ships no code: give the version of the code in the image'
        : '';
      apply.disabled = needsVersion;
    };
    inputs.copy_style.addEventListener('change', check);
    inputs.version.addEventListener('input', check);
    check();
    form.append(warning, apply);
    form.addEventListener('submit', event => {
      event.preventDefault();
      void this.applySettings(inputs);
    });
    body.append(form);
  }

  private collect(
    inputs: Record<string, HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>
  ): Record<string, unknown> {
    const values: Record<string, unknown> = {};
    for (const [key, input] of Object.entries(inputs)) {
      const raw = input.value.trim();
      if (key === 'include') {
        values[key] = raw ? raw.split(',').map(s => s.trim()).filter(Boolean) : [];
      } else if (key === 'images') {
        const mapping: Record<string, string> = {};
        for (const line of raw.split('\n')) {
          const [name, ...rest] = line.split('=');
          if (name.trim() && rest.length) {
            mapping[name.trim()] = rest.join('=').trim();
          }
        }
        values[key] = mapping;
      } else {
        values[key] = raw || null;
      }
    }
    return values;
  }

  private async applySettings(
    inputs: Record<string, HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>
  ): Promise<void> {
    if (!this.path) {
      return;
    }
    const values = this.collect(inputs);
    if (this.defaults) {
      for (const key of Object.keys(this.defaults.schema.properties ?? {})) {
        const value = values[key];
        if (value !== null && value !== undefined) {
          await this.defaults.set(key, value as JSONValue);
        }
      }
    }
    try {
      await request('settings', { method: 'PUT', body: JSON.stringify({ settings: values }) }, {
        path: this.path
      });
      const reached = await this.sendToKernel(values);
      this.status.textContent = reached
        ? 'Settings saved and sent to the kernel.'
        : 'Settings saved to the project (.flyte-jupyter.toml).';
    } catch (error) {
      this.status.textContent = `Could not save settings: ${error}`;
    }
    await this.loadSettings();
    this.schedulePreview();
  }

  /** Session settings for the notebook's kernel. */
  private async sendToKernel(values: Record<string, unknown>): Promise<boolean> {
    const reply = await this.askKernel({ settings: values as JSONObject });
    return reply?.ok === true;
  }

  /**
   * One request to the notebook's kernel through the "flyte_jupyter" comm target (registered
   * by %load_ext flyte_jupyter); null when there is no kernel or it does not answer.
   */
  private async askKernel(data: JSONObject): Promise<any | null> {
    const kernel = this.notebook?.sessionContext.session?.kernel;
    if (!kernel) {
      return null;
    }
    try {
      const comm = kernel.createComm('flyte_jupyter');
      const reply = new Promise<any | null>(resolve => {
        comm.onMsg = msg => resolve(msg.content.data);
        comm.onClose = () => resolve(null);
        window.setTimeout(() => resolve(null), 5000);
      });
      await comm.open(data).done;
      const answer = await reply;
      if (!comm.isDisposed) {
        comm.close();
      }
      return answer;
    } catch {
      return null;
    }
  }

  // --- preview ----------------------------------------------------------------------

  private schedulePreview(): void {
    window.clearTimeout(this.previewTimer);
    this.previewTimer = window.setTimeout(() => void this.loadPreview(), 500);
  }

  private async loadPreview(): Promise<void> {
    const body = this.previewBody;
    if (!this.path) {
      body.replaceChildren();
      return;
    }
    // The active cell's slice from the kernel when it can answer, else the whole notebook.
    let preview: IPreview;
    let scope = 'the whole notebook';
    const cell = this.notebook?.content.activeCell;
    const source = cell?.model.type === 'code' ? cell.model.sharedModel.getSource() : '';
    const answer = source.trim() ? await this.askKernel({ preview: source }) : null;
    if (answer?.ok && answer.preview) {
      preview = answer.preview as IPreview;
      scope = 'the active cell';
    } else {
      try {
        preview = await request<IPreview>('preview', {}, { path: this.path });
      } catch (error) {
        body.replaceChildren(el('p', { class: 'fj-error' }, String(error)));
        return;
      }
    }
    const table = el('table', { class: 'fj-table fj-preview' });
    const head = el('tr');
    for (const title of ['file', 'size', 'why it ships']) {
      head.append(el('th', {}, title));
    }
    table.append(head);
    for (const file of preview.files) {
      const row = el('tr');
      row.append(
        el('td', { class: 'fj-path' }, file.path),
        el('td', {}, humanSize(file.size)),
        el('td', {}, file.reason)
      );
      table.append(row);
    }
    const summary = el(
      'p',
      { class: 'fj-summary' },
      `For ${scope}: ${preview.files.length} files, ${humanSize(preview.total_bytes)} · copy style ` +
        `${preview.copy_style} · ${preview.digest.slice(0, 19)}… · version ${preview.version}`
    );
    const parts: HTMLElement[] = [summary, table];
    for (const [name, size] of Object.entries(preview.values ?? {})) {
      parts.push(el('p', { class: 'fj-value' }, `input value ${name}: ${humanSize(size)} pickled`));
    }
    for (const secret of preview.excluded_secrets) {
      parts.push(el('p', { class: 'fj-warning' }, `left out as a secret: ${secret}`));
    }
    for (const warning of preview.warnings) {
      if (!warning.includes('looks like a secret')) {
        parts.push(el('p', { class: 'fj-warning' }, warning));
      }
    }
    body.replaceChildren(...parts);
  }

  // --- runs -------------------------------------------------------------------------

  private async refreshRuns(): Promise<void> {
    let rows: IRunRow[];
    try {
      rows = (await request<{ runs: IRunRow[] }>('runs', {}, { limit: '20' })).runs;
    } catch (error) {
      this.runsBody.replaceChildren(el('p', { class: 'fj-error' }, String(error)));
      return;
    }
    if (!rows.length) {
      this.runsBody.replaceChildren(el('p', {}, 'No runs yet: use %%flyte_run in a cell.'));
      return;
    }
    const list = el('ul', { class: 'fj-runs', 'aria-label': 'runs' });
    for (const run of rows) {
      const item = el('li', {
        tabindex: '0',
        'data-run': run.id,
        class: `fj-run fj-${run.status}`,
        title: `${run.id}: Enter shows its logs`
      });
      const action = ['succeeded', 'failed', 'cancelled'].includes(run.status)
        ? ['Re-run', 'rerun']
        : ['Cancel', 'cancel'];
      const button = el('button', { class: 'jp-mod-styled fj-action', title: `${action[0]} ${run.id}` }, action[0]);
      button.addEventListener('click', event => {
        event.stopPropagation();
        void request(`runs/${run.id}/${action[1]}`, { method: 'POST' }).then(() =>
          this.refreshRuns()
        );
      });
      const first = el('div', { class: 'fj-run-line' });
      first.append(
        el('span', { class: 'fj-status-cell' }, run.status),
        el('span', { class: 'fj-run-name' }, run.name),
        el('span', { class: 'fj-run-time' }, run.duration),
        button
      );
      const digest = (run.digest ?? 'no bundle').replace('sha256:', '').slice(0, 12);
      const second = el(
        'div',
        { class: 'fj-run-meta' },
        `${digest} · ${run.version} · ${run.image ?? 'default image'} · ${run.executor}`
      );
      item.append(first, second);
      const open = () => void this.showLogs(run);
      item.addEventListener('click', open);
      item.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          open();
        }
      });
      list.append(item);
    }
    this.runsBody.replaceChildren(list);
    const followed = rows.find(run => run.id === this.shownRun);
    if (followed && this.logsBox.textContent?.includes(', live)')) {
      void this.showLogs(followed);
    }
  }

  private async showLogs(run: IRunRow): Promise<void> {
    const doc = await request<{ status: string; logs: string; final: boolean }>(
      `runs/${run.id}/logs`
    );
    this.shownRun = run.id;
    if (!doc.final) {
      this.logsBox.textContent = `run ${run.id} (${doc.status}, live)\n${doc.logs}`;
      return;
    }
    const detail = await request<{ outcome: Record<string, string> }>(`runs/${run.id}`);
    const outcome = detail.outcome;
    const summary = outcome.traceback
      ? `\n${outcome.traceback}`
      : outcome.repr !== undefined
        ? `\nresult (${outcome.type}): ${outcome.repr}`
        : outcome.note
          ? `\n${outcome.note}`
          : '';
    this.logsBox.textContent = `run ${run.id} (${doc.status})\n${doc.logs}${summary}`;
  }

  // --- export -----------------------------------------------------------------------

  private buildExport(): void {
    const name = el('input', {
      class: 'jp-mod-styled',
      id: 'fj-export-name',
      placeholder: 'image name (default: flyte-jupyter-<notebook>)'
    });
    const version = el('input', {
      class: 'jp-mod-styled',
      id: 'fj-export-version',
      placeholder: 'version (default: content hash)'
    });
    const button = el('button', { class: 'jp-mod-styled jp-mod-accept' }, 'Export notebook to image');
    const log = el('pre', { class: 'fj-logs', 'aria-label': 'build log' });
    button.addEventListener('click', () => void this.export(name.value, version.value, log, button));
    this.exportBody.append(
      el('label', { for: 'fj-export-name' }, 'image name'),
      name,
      el('label', { for: 'fj-export-version' }, 'version'),
      version,
      button,
      log
    );
  }

  private async export(
    name: string,
    version: string,
    log: HTMLPreElement,
    button: HTMLButtonElement
  ): Promise<void> {
    if (!this.path) {
      log.textContent = 'Open a notebook first.';
      return;
    }
    button.disabled = true;
    log.textContent = 'starting the build…';
    try {
      const { id } = await request<{ id: string }>('export', {
        method: 'POST',
        body: JSON.stringify({ path: this.path, image_name: name, version })
      });
      for (;;) {
        const job = await request<IExportJob>(`export/${id}`);
        log.textContent = job.log.slice(-40).join('\n');
        if (job.status !== 'running') {
          log.textContent +=
            job.status === 'succeeded' ? `\nbuilt ${job.tag}` : `\nfailed: ${job.error}`;
          break;
        }
        await new Promise(resolve => window.setTimeout(resolve, 1000));
      }
    } catch (error) {
      log.textContent = `export failed: ${error}`;
    } finally {
      button.disabled = false;
    }
  }
}
