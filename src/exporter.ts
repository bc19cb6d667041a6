/**
 * Export the notebook to an image: disabled, with the reason, when no Docker engine answers.
 */
import { Widget } from '@lumino/widgets';

import { IExportAvailability, IExportJob, errorText, request } from './api';
import { el } from './dom';

export class ExportView extends Widget {
  private path: string | null = null;
  private button: HTMLButtonElement;
  private reason: HTMLElement;
  private log: HTMLPreElement;
  private name: HTMLInputElement;
  private version: HTMLInputElement;
  private available: IExportAvailability | null = null;
  private running = false;

  constructor() {
    super();
    this.addClass('fj-export-view');
    this.name = el('input', {
      class: 'jp-mod-styled',
      id: 'fj-export-name',
      placeholder: 'flyte-jupyter-<notebook>'
    });
    this.version = el('input', {
      class: 'jp-mod-styled',
      id: 'fj-export-version',
      placeholder: 'content hash'
    });
    this.button = el('button', { class: 'jp-mod-styled jp-mod-accept' }, 'Export to image');
    this.reason = el('p', { class: 'fj-note', id: 'fj-export-reason' });
    this.button.setAttribute('aria-describedby', 'fj-export-reason');
    this.log = el('pre', { class: 'fj-logs', 'aria-label': 'build log' });
    this.button.addEventListener('click', () => void this.export());
    const nameRow = el('div', { class: 'fj-row' });
    nameRow.append(el('label', { for: 'fj-export-name' }, 'image name'), this.name);
    const versionRow = el('div', { class: 'fj-row' });
    versionRow.append(el('label', { for: 'fj-export-version' }, 'version'), this.version);
    this.node.append(nameRow, versionRow, this.button, this.reason, this.log);
    this.refreshState();
  }

  setPath(path: string | null): void {
    this.path = path;
    this.refreshState();
  }

  protected onAfterAttach(): void {
    void request<IExportAvailability>('export')
      .then(doc => (this.available = doc))
      .catch(error => (this.available = { available: false, reason: errorText(error) }))
      .then(() => this.refreshState());
  }

  /** Enabled only when it can work; otherwise the reason, next to the button. */
  refreshState(): void {
    let reason = '';
    if (!this.path) {
      reason = 'Open a notebook to export it.';
    } else if (this.available === null) {
      reason = 'Checking for a Docker engine…';
    } else if (!this.available.available) {
      reason = `Export needs Docker: ${this.available.reason}`;
    }
    this.button.disabled = this.running || !!reason;
    this.button.title = reason || 'Build an image with this notebook as a module';
    this.reason.textContent = reason;
  }

  private async export(): Promise<void> {
    if (!this.path) {
      return;
    }
    this.running = true;
    this.refreshState();
    this.log.classList.remove('fj-error');
    this.log.textContent = 'starting the build…';
    try {
      const { id } = await request<{ id: string }>('export', {
        method: 'POST',
        body: JSON.stringify({
          path: this.path,
          image_name: this.name.value,
          version: this.version.value
        })
      });
      for (;;) {
        const job = await request<IExportJob>(`export/${id}`);
        this.log.textContent = job.log.slice(-40).join('\n');
        if (job.status !== 'running') {
          if (job.status === 'succeeded') {
            this.log.textContent += `\nbuilt ${job.tag}`;
          } else {
            this.log.classList.add('fj-error');
            this.log.textContent += `\nfailed: ${job.error}`;
          }
          break;
        }
        await new Promise(resolve => window.setTimeout(resolve, 1000));
      }
    } catch (error) {
      this.log.classList.add('fj-error');
      this.log.textContent = `Export failed: ${errorText(error)}`;
    } finally {
      this.running = false;
      this.refreshState();
    }
  }
}
