/**
 * The flyte-jupyter sidebar: a JupyterLab SidePanel with collapsible sections (Runs first, so
 * a live run shows without scrolling), each with its header toolbar: runs, what the next run
 * ships, the project's settings, and export to an image.
 */
import type { Message } from '@lumino/messaging';
import { NotebookPanel, INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { PanelWithToolbar, SidePanel, ToolbarButton, refreshIcon } from '@jupyterlab/ui-components';
import { JSONObject } from '@lumino/coreutils';
import { AccordionPanel, Panel, Widget } from '@lumino/widgets';

import { elided } from './dom';
import { ExportView } from './exporter';
import { PreviewView } from './preview';
import { RunsView } from './runs';
import { SettingsView } from './settingsform';

function section(title: string, content: Widget, id: string): PanelWithToolbar {
  const panel = new PanelWithToolbar();
  panel.id = id;
  panel.title.label = title;
  panel.title.caption = title;
  panel.addClass('fj-section');
  content.addClass('fj-section-body');
  panel.addWidget(content);
  return panel;
}

export class FlyteSidebar extends SidePanel {
  /** undefined until the first follow(), so an empty start is rendered too */
  private notebook: NotebookPanel | null | undefined = undefined;
  private notebookLine: HTMLElement;
  private runs: RunsView;
  private preview: PreviewView;
  private settings: SettingsView;
  private exporter: ExportView;

  constructor(tracker: INotebookTracker) {
    super({ header: new Panel() });
    this.id = 'flyte-jupyter-sidebar';
    this.addClass('fj-sidebar');
    this.title.caption = 'flyte-jupyter';
    this.notebookLine = elided('', 'fj-status', 'div');
    this.notebookLine.setAttribute('role', 'status');
    this.header.addWidget(new Widget({ node: this.notebookLine }));
    this.header.addClass('fj-header');

    this.runs = new RunsView(() => this.path);
    this.preview = new PreviewView(data => this.askKernel(data));
    this.settings = new SettingsView(
      values => this.sendToKernel(values),
      () => this.preview.schedule(0)
    );
    this.exporter = new ExportView();

    const runs = section('Runs', this.runs, 'fj-section-runs');
    for (const [name, item] of this.runs.toolbarItems) {
      runs.toolbar.addItem(name, item);
    }
    const preview = section('Next run ships', this.preview, 'fj-section-preview');
    preview.toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        tooltip: 'Refresh the preview',
        onClick: () => this.preview.schedule(0)
      })
    );
    this.addWidget(runs);
    this.addWidget(preview);
    this.addWidget(section('Settings', this.settings, 'fj-section-settings'));
    this.addWidget(section('Export to image', this.exporter, 'fj-section-export'));
    // export is occasional: folded until asked for, so runs and preview get the room
    (this.content as AccordionPanel).collapse(3);

    tracker.currentChanged.connect(() => this.follow(tracker.currentWidget));
    this.follow(tracker.currentWidget);
  }

  /** JupyterLab settings: the user's defaults for what a project leaves unset. */
  useDefaults(settings: ISettingRegistry.ISettings): void {
    this.settings.useDefaults(settings);
  }

  /** The notebook the panel describes, relative to the server root. */
  get path(): string | null {
    return this.notebook?.context.path ?? null;
  }

  /** Opening the panel (icon or palette) puts the keyboard in it: on the selected run. */
  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    this.focusPanel();
  }

  focusPanel(): void {
    if (!this.runs.focusList()) {
      this.node.querySelector<HTMLElement>('.lm-AccordionPanel-title')?.focus();
    }
  }

  private follow(panel: NotebookPanel | null): void {
    if (panel === this.notebook) {
      return;
    }
    this.notebook = panel;
    if (panel) {
      panel.context.saveState.connect((_, state) => {
        if (state === 'completed' && panel === this.notebook) {
          this.preview.schedule();
        }
      });
      panel.content.activeCellChanged.connect(() => {
        if (panel === this.notebook) {
          this.preview.schedule();
        }
      });
    }
    const text = panel
      ? panel.context.path
      : 'Open a notebook: settings, preview and its runs follow the active notebook.';
    this.notebookLine.textContent = text;
    this.notebookLine.title = text;
    this.notebookLine.classList.toggle('fj-elide', !!panel);
    this.settings.setPath(this.path);
    this.preview.setNotebook(panel);
    this.exporter.setPath(this.path);
    this.runs.notebookChanged();
  }

  private async sendToKernel(values: JSONObject): Promise<boolean> {
    const reply = await this.askKernel({ settings: values });
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
}
