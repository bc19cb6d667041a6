/**
 * The project's settings for the active notebook, one input per field the server declares
 * (its widget, choices, minimum; its help as tooltip), so no list of settings, copy styles or
 * executors lives here. Apply saves only the keys the user changed
 * to the project's .flyte-jupyter.toml (comments stay), sends them to the kernel, and writes
 * the user's JupyterLab defaults only when "use as my default" is ticked.
 */
import { Notification } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { JSONObject, JSONValue } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { IField, ISettingsDoc, errorText, request } from './api';
import { el, elided, emptyState } from './dom';

type Input = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** Groups always shown; any other group (e.g. "flyte") shows when it names the executor. */
const ALWAYS = ['selection', 'run'];

/** Sends settings to the notebook's kernel; true when it took them. */
export type SendToKernel = (values: JSONObject) => Promise<boolean>;

/** A value as its input shows it (a checkbox: "true"/"false"). */
function shown(field: IField, value: unknown): string {
  if (field.widget === 'json') {
    return Object.entries((value ?? {}) as Record<string, unknown>)
      .map(([name, v]) => `${name}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join('\n');
  }
  if (field.widget === 'checkbox') {
    return String(Boolean(value));
  }
  return Array.isArray(value) ? value.join(', ') : value == null ? '' : String(value);
}

/** The input's text as a value of the field's type (empty: unset, the key is removed). */
function parsed(field: IField, raw: string): unknown {
  const text = raw.trim();
  switch (field.widget) {
    case 'checkbox':
      return text === 'true';
    case 'list':
      return text ? text.split(',').map(s => s.trim()).filter(Boolean) : [];
    case 'number':
      return text ? Number(text) : null;
    case 'json': {
      const mapping: Record<string, string> = {};
      for (const line of text.split('\n')) {
        const [name, ...rest] = line.split('=');
        if (name.trim() && rest.length) {
          mapping[name.trim()] = rest.join('=').trim();
        }
      }
      return mapping;
    }
    default:
      return text || null;
  }
}

/** The input for one field, built from what the server declares (widget, choices, minimum). */
function inputFor(key: string, field: IField, current: string): Input {
  const id = `fj-setting-${key}`;
  const attrs = { id, name: key, title: field.help };
  if (field.widget === 'select') {
    const select = el('select', { ...attrs, class: 'jp-mod-styled' });
    const names = field.choices.includes(current) || !current ? field.choices : [...field.choices, current];
    for (const name of names) {
      select.append(el('option', { value: name }, name));
    }
    return select;
  }
  if (field.widget === 'json') {
    const area = el('textarea', { ...attrs, class: 'jp-mod-styled', rows: '2' });
    area.setAttribute('placeholder', 'name=value, one a line');
    return area;
  }
  if (field.widget === 'checkbox') {
    return el('input', { ...attrs, type: 'checkbox' });
  }
  const input = el('input', {
    ...attrs,
    class: 'jp-mod-styled',
    type: field.widget === 'number' ? 'number' : 'text'
  });
  if (field.minimum !== null) {
    input.min = String(field.minimum);
  }
  const fallback = shown(field, field.default);
  if (fallback) {
    input.setAttribute('placeholder', fallback);
  }
  return input;
}

/** A select's help for its value: the "value: ..." part of the help, else all of it. */
function choiceHelp(field: IField, value: string): string {
  const part = field.help.split('; ').find(p => p.startsWith(`${value}:`));
  return part ?? field.help;
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
    const fields = doc.fields;
    const keys = Object.keys(fields);
    const inputs: Record<string, Input> = {};
    const rows: Record<string, HTMLElement> = {};
    const initial: Record<string, string> = {};
    const inherited = new Set<string>();
    const text = (key: string) => {
      const input = inputs[key];
      return input instanceof HTMLInputElement && input.type === 'checkbox'
        ? String(input.checked)
        : input.value;
    };
    for (const key of keys) {
      const field = fields[key];
      const setting = { ...doc.settings[key] };
      const fallback = this.defaults?.user[key];
      if (setting.source === 'default' && fallback !== undefined) {
        setting.value = fallback;
        setting.source = 'your JupyterLab default';
        inherited.add(key);
      }
      const id = `fj-setting-${key}`;
      const row = el('div', { class: `fj-row fj-group-${field.group}` });
      row.append(el('label', { for: id, title: field.help }, key.replace(/_/g, ' ')));
      const value = shown(field, setting.value);
      const input = inputFor(key, field, value);
      if (input instanceof HTMLInputElement && input.type === 'checkbox') {
        input.checked = value === 'true';
      } else {
        input.value = value;
      }
      inputs[key] = input;
      initial[key] = text(key);
      row.append(input);
      if (field.widget === 'select') {
        row.append(el('div', { class: 'fj-help', id: `${id}-help` }));
        input.setAttribute('aria-describedby', `${id}-help`);
      }
      if (setting.source !== 'default') {
        row.append(el('div', { class: 'fj-source' }, `from ${setting.source}`));
      }
      rows[key] = row;
      form.append(row);
    }
    const warning = el('p', { class: 'fj-warning', role: 'alert' });
    const asDefault = el('input', { type: 'checkbox', id: 'fj-as-default' });
    const asDefaultLabel = el('label', { class: 'fj-check', for: 'fj-as-default' });
    asDefaultLabel.prepend(asDefault);
    asDefaultLabel.append(' Also use as my default for every project');
    const apply = el('button', { type: 'submit', class: 'jp-mod-styled jp-mod-accept' }, 'Apply');
    const changed = () => keys.filter(key => text(key) !== initial[key]);
    const check = () => {
      for (const key of keys) {
        const field = fields[key];
        rows[key].hidden = !ALWAYS.includes(field.group) && inputs.executor?.value !== field.group;
        const help = form.querySelector(`#fj-setting-${key}-help`);
        if (help) {
          help.textContent = choiceHelp(field, inputs[key].value);
        }
      }
      const needsVersion =
        inputs.copy_style?.value === 'none' && !inputs.version?.value.trim();
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
      const values: Record<string, unknown> = {};
      for (const key of changed()) {
        values[key] = parsed(fields[key], text(key));
      }
      const kernel: Record<string, unknown> = { ...values };
      for (const key of inherited) {
        if (!(key in kernel)) {
          kernel[key] = parsed(fields[key], text(key));
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
