/**
 * The project's settings for the active notebook. Apply saves only the keys the user changed
 * to the project's .flyte-jupyter.toml (comments stay), sends them to the kernel, and writes
 * the user's JupyterLab defaults only when "use as my default" is ticked.
 */
import { Notification } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { JSONObject, JSONValue } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { ISettingsDoc, errorText, request } from './api';
import { el, elided, emptyState } from './dom';

const COPY_STYLES: Record<string, string> = {
  auto: 'Ships the local modules your code imports (lazy imports too).',
  all: 'Ships every file under the root dir that .gitignore/.flyteignore allow.',
  none: 'Ships no code: the image has it (give its version).'
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

type Input = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** Sends settings to the notebook's kernel; true when it took them. */
export type SendToKernel = (values: JSONObject) => Promise<boolean>;

function shown(key: string, value: unknown): string {
  if (key === 'images') {
    return Object.entries((value ?? {}) as Record<string, string>)
      .map(([name, uri]) => `${name}=${uri}`)
      .join('\n');
  }
  return Array.isArray(value) ? value.join(', ') : value == null ? '' : String(value);
}

function parsed(key: string, raw: string): unknown {
  const text = raw.trim();
  if (key === 'include') {
    return text ? text.split(',').map(s => s.trim()).filter(Boolean) : [];
  }
  if (key === 'images') {
    const mapping: Record<string, string> = {};
    for (const line of text.split('\n')) {
      const [name, ...rest] = line.split('=');
      if (name.trim() && rest.length) {
        mapping[name.trim()] = rest.join('=').trim();
      }
    }
    return mapping;
  }
  return text || null;
}

export class SettingsView extends Widget {
  private path: string | null = null;
  private defaults: ISettingRegistry.ISettings | null = null;

  /** `saved` runs after Apply stored the settings (the preview follows them). */
  constructor(
    private sendToKernel: SendToKernel,
    private saved: () => void
  ) {
    super();
    this.addClass('fj-settings-view');
    this.node.append(emptyState("Open a notebook to see its project's settings."));
  }

  useDefaults(settings: ISettingRegistry.ISettings): void {
    this.defaults = settings;
    void this.load();
  }

  setPath(path: string | null): void {
    this.path = path;
    void this.load();
  }

  async load(): Promise<void> {
    const path = this.path;
    if (!path) {
      this.node.replaceChildren(emptyState("Open a notebook to see its project's settings."));
      return;
    }
    let doc: ISettingsDoc;
    try {
      doc = await request<ISettingsDoc>('settings', {}, { path });
    } catch (error) {
      this.node.replaceChildren(
        el('p', { class: 'fj-error' }, `Could not read the settings: ${errorText(error)}`)
      );
      return;
    }
    if (path !== this.path) {
      return;
    }
    this.node.replaceChildren(this.form(doc));
  }

  private form(doc: ISettingsDoc): HTMLFormElement {
    const form = el('form', { class: 'fj-form', 'aria-label': 'flyte-jupyter settings' });
    const project = el('div', { class: 'fj-project' });
    project.append('Project ', elided(doc.root_dir, 'fj-path'));
    form.append(project);
    const inputs: Record<string, Input> = {};
    const initial: Record<string, string> = {};
    const inherited = new Set<string>();
    for (const key of EDITABLE) {
      const setting = { ...doc.settings[key] };
      const fallback = this.defaults?.user[key];
      if (setting.source === 'default' && fallback !== undefined) {
        setting.value = fallback;
        setting.source = 'your JupyterLab default';
        inherited.add(key);
      }
      const id = `fj-setting-${key}`;
      const row = el('div', { class: 'fj-row' });
      row.append(el('label', { for: id }, key.replace('_', ' ')));
      let input: Input;
      if (key === 'copy_style' || key === 'executor') {
        input = el('select', { id, class: 'jp-mod-styled', name: key });
        const options = key === 'copy_style' ? Object.keys(COPY_STYLES) : ['local', 'docker'];
        for (const name of options) {
          input.append(el('option', { value: name }, name));
        }
      } else if (key === 'images') {
        input = el('textarea', { id, class: 'jp-mod-styled', name: key, rows: '2' });
        input.setAttribute('placeholder', 'name=image URI, one a line');
      } else {
        input = el('input', { id, class: 'jp-mod-styled', name: key, type: 'text' });
        const placeholders: Record<string, string> = {
          root_dir: 'project folder',
          include: 'data/*.csv, conf/*.yaml',
          store: 'file store in the cache',
          image: 'this Python',
          version: 'content hash'
        };
        input.setAttribute('placeholder', placeholders[key] ?? '');
      }
      input.value = shown(key, setting.value);
      initial[key] = input.value;
      inputs[key] = input;
      row.append(input);
      if (key === 'copy_style') {
        row.append(el('div', { class: 'fj-help', id: 'fj-copy-style-help' }));
        input.setAttribute('aria-describedby', 'fj-copy-style-help');
      }
      if (setting.source !== 'default') {
        row.append(el('div', { class: 'fj-source' }, `from ${setting.source}`));
      }
      form.append(row);
    }
    const warning = el('p', { class: 'fj-warning', role: 'alert' });
    const asDefault = el('input', { type: 'checkbox', id: 'fj-as-default' });
    const asDefaultLabel = el('label', { class: 'fj-check', for: 'fj-as-default' });
    asDefaultLabel.prepend(asDefault);
    asDefaultLabel.append(' Also use as my default for every project');
    const apply = el('button', { type: 'submit', class: 'jp-mod-styled jp-mod-accept' }, 'Apply');
    const changed = () => EDITABLE.filter(key => inputs[key].value !== initial[key]);
    const check = () => {
      const help = form.querySelector('#fj-copy-style-help');
      if (help) {
        help.textContent = COPY_STYLES[inputs.copy_style.value] ?? '';
      }
      const needsVersion = inputs.copy_style.value === 'none' && !inputs.version.value.trim();
      warning.textContent = needsVersion
        ? 'Copy style none ships no code: give the version of the code in the image.'
        : '';
      const count = changed().length;
      apply.disabled = needsVersion || count === 0;
      apply.title = needsVersion
        ? 'Give a version first'
        : count === 0
          ? 'Nothing changed yet'
          : `Save ${changed().join(', ')} to .flyte-jupyter.toml`;
    };
    form.addEventListener('input', check);
    form.addEventListener('change', check);
    check();
    form.append(warning, asDefaultLabel, apply);
    form.addEventListener('submit', event => {
      event.preventDefault();
      const keys = changed();
      const values: Record<string, unknown> = {};
      for (const key of keys) {
        values[key] = parsed(key, inputs[key].value);
      }
      const kernel: Record<string, unknown> = { ...values };
      for (const key of inherited) {
        if (!(key in kernel)) {
          kernel[key] = parsed(key, inputs[key].value);
        }
      }
      apply.disabled = true;
      void this.apply(values, kernel, asDefault.checked);
    });
    return form;
  }

  private async apply(
    values: Record<string, unknown>,
    kernel: Record<string, unknown>,
    asDefault: boolean
  ): Promise<void> {
    const path = this.path;
    if (!path) {
      return;
    }
    const keys = Object.keys(values).join(', ');
    try {
      const saved = await request<{ saved: string }>(
        'settings',
        { method: 'PUT', body: JSON.stringify({ settings: values }) },
        { path }
      );
      if (asDefault && this.defaults) {
        for (const key of Object.keys(this.defaults.schema.properties ?? {})) {
          const value = values[key];
          if (value !== undefined && value !== null) {
            await this.defaults.set(key, value as JSONValue);
          }
        }
      }
      const reached = await this.sendToKernel(kernel as JSONObject);
      const file = saved.saved.split('/').slice(-2).join('/');
      await this.load();
      this.saved();
      Notification.success(
        `Saved ${keys} to ${file}` +
          (asDefault ? ' and as your default' : '') +
          (reached ? '; the kernel uses it now.' : '; the next run reads it.'),
        { autoClose: 5000 }
      );
    } catch (error) {
      Notification.error(`Could not save ${keys}: ${errorText(error)}`, { autoClose: 10000 });
      const form = this.node.querySelector('form');
      form?.querySelector('.fj-apply-error')?.remove();
      form?.append(
        el('p', { class: 'fj-error fj-apply-error', role: 'alert' }, errorText(error))
      );
      form?.querySelector<HTMLButtonElement>('button[type=submit]')?.removeAttribute('disabled');
    }
  }
}
