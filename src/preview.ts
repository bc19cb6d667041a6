/**
 * What the next run ships: for the active cell (sliced by the kernel) or the whole notebook,
 * saying which cell it describes, with a loading state while the kernel is busy.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { IPreview, errorText, humanSize, request } from './api';
import { el, elided, emptyState } from './dom';

/** Asks the notebook's kernel (comm target "flyte_jupyter"); null when nobody answers. */
export type AskKernel = (data: Record<string, string>) => Promise<any | null>;

export class PreviewView extends Widget {
  private heading: HTMLElement;
  private body: HTMLElement;
  private timer = 0;
  private waitingForIdle = false;
  private notebook: NotebookPanel | null = null;

  constructor(private askKernel: AskKernel) {
    super();
    this.addClass('fj-preview-view');
    this.heading = el('div', { class: 'fj-preview-heading', role: 'status' });
    this.body = el('div', { class: 'fj-preview-body' });
    this.node.append(this.heading, this.body);
    this.setNotebook(null);
  }

  setNotebook(panel: NotebookPanel | null): void {
    this.notebook = panel;
    if (panel) {
      panel.sessionContext.statusChanged.connect((_, status) => {
        if (panel === this.notebook && status === 'idle' && this.waitingForIdle) {
          this.schedule();
        }
      });
      panel.sessionContext.kernelChanged.connect(() => {
        if (panel === this.notebook) {
          this.schedule();
        }
      });
    }
    this.schedule();
  }

  /** Refresh soon (debounced): on save, a change of active cell, an idle kernel. */
  schedule(delay = 400): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.load(), delay);
  }

  /** "cell 4 · In[3]": the active cell's place in the notebook and its last run. */
  private cellLabel(): string | null {
    const content = this.notebook?.content;
    const cell = content?.activeCell;
    if (!content || !cell || cell.model.type !== 'code') {
      return null;
    }
    const count = (cell.model as any).executionCount as number | null;
    return `cell ${content.activeCellIndex + 1}${count ? ` · In[${count}]` : ''}`;
  }

  private async load(): Promise<void> {
    const panel = this.notebook;
    if (!panel) {
      this.heading.replaceChildren();
      this.body.replaceChildren(emptyState('Open a notebook to see what its next run ships.'));
      return;
    }
    const label = this.cellLabel();
    const cell = panel.content.activeCell;
    const source = label && cell ? cell.model.sharedModel.getSource() : '';
    const kernel = panel.sessionContext.session?.kernel;
    this.waitingForIdle = false;
    if (kernel && source.trim() && kernel.status === 'busy') {
      // the kernel answers only between cells: say so rather than show a stale preview
      this.waitingForIdle = true;
      this.setLoading(`Kernel busy: the preview of ${label} follows when it is idle…`);
      return;
    }
    this.setLoading(`Loading the preview${label ? ` of ${label}` : ''}…`);
    let preview: IPreview;
    let scope: string;
    let line = '';
    const answer = kernel && source.trim() ? await this.askKernel({ preview: source }) : null;
    if (panel !== this.notebook) {
      return;
    }
    if (!answer && kernel?.status === 'busy') {
      // it got busy before answering: wait for it rather than show the whole notebook
      this.waitingForIdle = true;
      this.setLoading(`Kernel busy: the preview of ${label} follows when it is idle…`);
      return;
    }
    if (answer?.ok && answer.preview) {
      preview = answer.preview as IPreview;
      scope = `For ${label}:`;
      line = source.trim().split('\n')[0];
    } else {
      try {
        preview = await request<IPreview>('preview', {}, { path: panel.context.path });
      } catch (error) {
        this.heading.replaceChildren();
        this.body.setAttribute('aria-busy', 'false');
        this.body.replaceChildren(
          el('p', { class: 'fj-error' }, `No preview: ${errorText(error)}`)
        );
        return;
      }
      scope = 'For the whole notebook';
      if (!kernel) {
        scope += ' (no kernel: start one to preview the active cell)';
      } else if (source.trim()) {
        scope += ' (run %load_ext flyte_jupyter to preview the active cell)';
      }
    }
    this.heading.replaceChildren(el('p', { class: 'fj-preview-scope' }, scope));
    if (line) {
      this.heading.append(elided(line, 'fj-cell-line', 'div'));
    }
    this.body.setAttribute('aria-busy', 'false');
    this.body.classList.remove('fj-stale');
    this.body.replaceChildren(...this.render(preview));
  }

  private setLoading(text: string): void {
    this.heading.replaceChildren(el('p', { class: 'fj-loading' }, text));
    this.body.setAttribute('aria-busy', 'true');
    this.body.classList.add('fj-stale');
  }

  private render(preview: IPreview): HTMLElement[] {
    const hex = preview.digest.replace('sha256:', '');
    const summary = el('p', { class: 'fj-summary' });
    summary.append(
      `${preview.files.length} files, ${humanSize(preview.total_bytes)} · copy style ` +
        `${preview.copy_style} · bundle `,
      el('span', { title: preview.digest }, hex.slice(0, 12))
    );
    if (!hex.startsWith(preview.version)) {
      // a version of its own (not the bundle's hash): worth its own mention
      summary.append(' · version ', elided(preview.version, 'fj-inline-elide'));
    }
    const table = el('table', { class: 'fj-table fj-preview' });
    const head = el('tr');
    for (const title of ['file', 'size', 'why']) {
      head.append(el('th', { scope: 'col' }, title));
    }
    table.append(head);
    for (const file of preview.files) {
      const row = el('tr');
      const path = el('td', { class: 'fj-path' });
      path.append(elided(file.path));
      const reason = el('td');
      reason.append(elided(file.reason));
      row.append(path, el('td', { class: 'fj-size' }, humanSize(file.size)), reason);
      table.append(row);
    }
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
    return parts;
  }
}
