package merge

import (
	"fmt"
	"sort"
	"strings"

	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// chatTemplates are the named chat templates a recipe's chat_template can
// ask for (mergekit's names), written here for the prompt formats they
// name. "auto" picks the template most of the input models carry.
var chatTemplates = map[string]string{
	"chatml": `{%- for message in messages -%}` +
		`{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}` +
		`{%- endfor -%}` +
		`{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}`,
	"llama3": `{%- for message in messages -%}` +
		`{%- if loop.first -%}{{- bos_token -}}{%- endif -%}` +
		`{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' -}}` +
		`{%- endfor -%}` +
		`{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}`,
	"mistral": `{%- set turns = messages -%}{%- set system = '' -%}` +
		`{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}{%- endif -%}` +
		`{{- bos_token -}}` +
		`{%- for message in turns -%}` +
		`{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{- raise_exception('conversation roles must alternate user/assistant after an optional system message') -}}{%- endif -%}` +
		`{%- if message['role'] == 'user' -%}` +
		`{%- if loop.first -%}{{- '[INST] ' + system + message['content'] + ' [/INST]' -}}{%- else -%}{{- '[INST] ' + message['content'] + ' [/INST]' -}}{%- endif -%}` +
		`{%- else -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}` +
		`{%- endfor -%}`,
	"alpaca": `{%- for message in messages if message['role'] == 'system' -%}{%- if loop.last -%}{{- (message['content'] | trim) + '\n\n' -}}{%- endif -%}{%- endfor -%}` +
		`{%- for message in messages -%}` +
		`{%- if message['role'] == 'user' -%}{{- '### Instruction:\n' + (message['content'] | trim) -}}` +
		`{%- elif message['role'] == 'user_context' -%}{{- '### Input:\n' + (message['content'] | trim) -}}` +
		`{%- elif message['role'] == 'assistant' -%}{{- '### Response:\n' + (message['content'] | trim) -}}` +
		`{%- else -%}{{- '' -}}{%- endif -%}` +
		`{%- if message['role'] != 'system' and not loop.last -%}{{- '\n\n' -}}{%- endif -%}` +
		`{%- endfor -%}` +
		`{%- if add_generation_prompt and messages[-1]['role'] != 'assistant' -%}{{- '\n\n### Response:\n' -}}{%- endif -%}`,
	"exaone": `{%- for message in messages -%}` +
		`{%- if loop.first and message['role'] != 'system' -%}{{- '[|system|][|endofturn|]\n' -}}{%- endif -%}` +
		`{{- '[|' + message['role'] + '|]' + message['content'] -}}` +
		`{%- if message['role'] == 'user' -%}{{- '\n' -}}{%- else -%}{{- '[|endofturn|]\n' -}}{%- endif -%}` +
		`{%- endfor -%}` +
		`{%- if add_generation_prompt -%}{{- '[|assistant|]' -}}{%- endif -%}`,
}

// chatTemplateNames lists the names a recipe may give.
func chatTemplateNames() []string {
	names := []string{"auto"}
	for n := range chatTemplates {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	return names
}

// checkChatTemplate validates a recipe's chat_template: a name, or a
// literal Jinja template (mergekit's rule: at least 20 characters and a
// "{").
func checkChatTemplate(t string) error {
	if t == "auto" || chatTemplates[t] != "" || (len(t) >= 20 && strings.Contains(t, "{")) {
		return nil
	}
	return fmt.Errorf("chat_template %q is neither a template name (%s) nor a Jinja template%s", t, strings.Join(chatTemplateNames(), ", "), suggest(t, chatTemplateNames()))
}

// chatTemplate resolves the recipe's chat_template to the template text:
// for "auto", the template most input models carry (ties to the first
// model's), "" when none carries one.
func (p *Plan) chatTemplate() string {
	t := p.Recipe.ChatTemplate
	if named, ok := chatTemplates[t]; ok {
		return named
	}
	if t != "auto" {
		return t
	}
	count := map[string]int{}
	var order []string
	for i := range p.Checkpoints {
		dir := weights.ModelDir(modelPart(p.Recipe.resolve(p.Refs[i])))
		tok, err := tokenizer.Load(dir)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(tok.ChatTemplate())
		if s == "" {
			continue
		}
		if count[s] == 0 {
			order = append(order, s)
		}
		count[s]++
	}
	best := ""
	for _, s := range order {
		if count[s] > count[best] {
			best = s
		}
	}
	return best
}
