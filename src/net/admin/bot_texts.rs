//! The words of the knowledge-base and bot admin pages, in English and Simplified Chinese.
//!
//! The language comes from `?lang=en|zh` when given (the pages link both), else from the
//! browser's `Accept-Language`; forms carry it in a hidden field so an answer stays in it.

use axum::http::{HeaderMap, header};

/// A language of these pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// `?lang=` first, then the first language of `Accept-Language` that is English or Chinese.
    pub fn pick(chosen: Option<&str>, headers: &HeaderMap) -> Lang {
        match chosen.map(str::trim) {
            Some("zh") | Some("zh-CN") => return Lang::Zh,
            Some("en") => return Lang::En,
            _ => {}
        }
        let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|value| value.to_str().ok()).unwrap_or("");
        for tag in accepted.split(',').map(|part| part.split(';').next().unwrap_or("").trim().to_lowercase()) {
            if tag.starts_with("zh") {
                return Lang::Zh;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }

    /// The value of `?lang=` and of the hidden form field.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of the page.
    pub fn html(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// Every string of the pages.
pub struct Texts {
    pub kb_title: &'static str,
    pub bot_title: &'static str,
    pub site: &'static str,
    pub show: &'static str,
    pub search: &'static str,
    pub search_placeholder: &'static str,
    pub no_entries: &'static str,
    pub no_site: &'static str,
    pub id: &'static str,
    pub lang: &'static str,
    pub questions: &'static str,
    pub questions_help: &'static str,
    pub answer: &'static str,
    pub category: &'static str,
    pub updated: &'static str,
    pub edit: &'static str,
    pub delete: &'static str,
    pub save: &'static str,
    pub new_entry: &'static str,
    pub add_entry: &'static str,
    pub edit_entry: &'static str,
    pub back: &'static str,
    pub import: &'static str,
    pub import_help: &'static str,
    pub format: &'static str,
    pub file: &'static str,
    pub file_text: &'static str,
    pub export: &'static str,
    pub try_it: &'static str,
    pub try_help: &'static str,
    pub try_button: &'static str,
    pub score: &'static str,
    pub decision: &'static str,
    pub decision_answer: &'static str,
    pub decision_model: &'static str,
    pub decision_judge: &'static str,
    pub decision_human: &'static str,
    pub decision_related: &'static str,
    pub decision_handoff: &'static str,
    pub decision_off: &'static str,
    pub no_match: &'static str,
    pub threshold_now: &'static str,
    pub settings: &'static str,
    pub enabled: &'static str,
    pub name: &'static str,
    pub threshold: &'static str,
    pub threshold_help: &'static str,
    pub greeting: &'static str,
    pub system_prompt: &'static str,
    pub idle_close: &'static str,
    pub idle_close_help: &'static str,
    pub llm: &'static str,
    pub llm_help: &'static str,
    pub base_url: &'static str,
    pub model: &'static str,
    pub api_key: &'static str,
    pub api_key_help: &'static str,
    pub remove_key: &'static str,
    pub timeout_ms: &'static str,
    pub handoff_phrases: &'static str,
    pub handoff_phrases_help: &'static str,
    pub terms: &'static str,
    pub terms_help: &'static str,
    pub embeddings: &'static str,
    pub embeddings_help: &'static str,
    pub unhelpful: &'static str,
    pub unhelpful_help: &'static str,
    pub no_unhelpful: &'static str,
    pub asked: &'static str,
    pub when: &'static str,
    pub source: &'static str,
    pub conversation: &'static str,
    pub saved: &'static str,
    pub deleted: &'static str,
    pub switch_to: &'static str,
    pub to_bot: &'static str,
    pub to_kb: &'static str,
    pub to_eval: &'static str,
    pub eval_title: &'static str,
    pub eval_help: &'static str,
    pub eval_messages: &'static str,
    pub eval_paste: &'static str,
    pub eval_run: &'static str,
    pub eval_no_entries: &'static str,
    pub eval_too_many: &'static str,
    pub eval_all: &'static str,
    pub eval_by_threshold: &'static str,
    pub eval_at_threshold: &'static str,
    pub eval_curve: &'static str,
    pub eval_wrong: &'static str,
    pub eval_none_wrong: &'static str,
    pub eval_expected: &'static str,
    pub eval_top: &'static str,
    pub answered: &'static str,
    pub correct: &'static str,
    pub precision: &'static str,
    pub recall: &'static str,
    pub threshold_word: &'static str,
    pub near_miss_answered: &'static str,
    pub unrelated_answered: &'static str,
}

pub const EN: Texts = Texts {
    kb_title: "Knowledge base",
    bot_title: "Bot",
    site: "Site",
    show: "Show",
    search: "Search",
    search_placeholder: "words in questions, answers or categories",
    no_entries: "No entries yet.",
    no_site: "Create a site first.",
    id: "ID",
    lang: "Language",
    questions: "Questions",
    questions_help: "One way of asking per line; the first is the title.",
    answer: "Answer",
    category: "Category",
    updated: "Updated",
    edit: "Edit",
    delete: "Delete",
    save: "Save",
    new_entry: "New entry",
    add_entry: "Add entry",
    edit_entry: "Edit entry",
    back: "Back to the list",
    import: "Import",
    import_help: "CSV (columns id, lang, questions, answer, category; questions separated by |) or JSON (an array of \
                  entries). A row with an id updates that entry; one without adds an entry. Any other column is an \
                  error, and a file with an error changes nothing.",
    format: "Format",
    file: "File",
    file_text: "Or paste the file",
    export: "Export",
    try_it: "Try it",
    try_help: "Type what a visitor might write: the three best entries, their scores and what the bot would do.",
    try_button: "Try",
    score: "Score",
    decision: "The bot would",
    decision_answer: "answer with this entry",
    decision_model: "ask the language model, with these entries as context",
    decision_judge: "ask the language model which of these entries answers (or to answer itself if none does)",
    decision_human: "offer a human",
    decision_related: "offer a human, with the related questions as quick replies",
    decision_handoff: "hand the conversation to a human (a handoff phrase)",
    decision_off: "do nothing: the bot is off for this site",
    no_match: "No entry matches at all.",
    threshold_now: "Threshold now",
    settings: "Settings",
    enabled: "The bot answers new conversations",
    name: "Name shown to visitors",
    threshold: "Threshold",
    threshold_help: "The lowest confidence (0 to 1: the estimated chance that the entry answers the message) at which its answer is sent as is.",
    greeting: "Greeting (empty for none)",
    system_prompt: "Instructions for the language model",
    idle_close: "Close bot-only conversations after (minutes)",
    idle_close_help: "A conversation no person took part in closes after this long without a message; 0 never.",
    llm: "Language model",
    llm_help: "Any OpenAI-compatible endpoint; leave the address empty for none.",
    base_url: "Endpoint (base URL)",
    model: "Model",
    api_key: "API key",
    api_key_help: "Never shown again; leave empty to keep the stored key.",
    remove_key: "Remove the stored key",
    timeout_ms: "Timeout (ms)",
    handoff_phrases: "More phrases that ask for a human",
    handoff_phrases_help: "One a line, on top of the built-in ones (我要人工, talk to an agent, ...).",
    terms: "Equivalent terms",
    terms_help: "One group a line, e.g. shipping = 运费 = 邮费, so a message in either language finds the entry.",
    embeddings: "Semantic matching (embeddings)",
    embeddings_help: "Any OpenAI-compatible /v1/embeddings endpoint (for example a local Ollama with bge-m3); leave the address empty to match by words only.",
    unhelpful: "Answers visitors found unhelpful",
    unhelpful_help: "The newest thumbs-down first: fix the entry, or add the question as a new way of asking.",
    no_unhelpful: "No thumbs-down yet.",
    asked: "Visitor asked",
    when: "When",
    source: "From",
    conversation: "Conversation",
    saved: "Saved.",
    deleted: "Deleted.",
    switch_to: "中文",
    to_bot: "Bot settings",
    to_kb: "Knowledge base",
    to_eval: "Evaluate the bot",
    eval_title: "Evaluate the bot",
    eval_help: "Paste visitor messages labelled with the entry that answers each, one JSON object a line: {\"message\": \"…\", \"expected\": ENTRY_ID or null, \"lang\": \"zh\", \"kind\": \"paraphrase\"}. The bot ranks each one as it would for a visitor; the figures below show what each threshold would do. Write the messages before you change entries or settings, and keep some aside that you never tune on.",
    eval_messages: "messages",
    eval_paste: "Labelled messages (JSON Lines)",
    eval_run: "Evaluate",
    eval_no_entries: "This site has no knowledge-base entries to evaluate.",
    eval_too_many: "Too many messages; at most",
    eval_all: "all",
    eval_by_threshold: "By threshold",
    eval_at_threshold: "At the current threshold, by language and kind",
    eval_curve: "Precision–recall curve",
    eval_wrong: "Wrong answers at the current threshold",
    eval_none_wrong: "No wrong answers at the current threshold.",
    eval_expected: "Expected",
    eval_top: "Top entry",
    answered: "Answered",
    correct: "Correct",
    precision: "precision",
    recall: "recall",
    threshold_word: "threshold",
    near_miss_answered: "Near-misses answered",
    unrelated_answered: "Unrelated answered",
};

pub const ZH: Texts = Texts {
    kb_title: "知识库",
    bot_title: "机器人",
    site: "站点",
    show: "显示",
    search: "搜索",
    search_placeholder: "问题、答案或分类中的词",
    no_entries: "还没有条目。",
    no_site: "请先创建站点。",
    id: "编号",
    lang: "语言",
    questions: "问题",
    questions_help: "每行一种问法；第一行是标题。",
    answer: "答案",
    category: "分类",
    updated: "更新时间",
    edit: "编辑",
    delete: "删除",
    save: "保存",
    new_entry: "新建条目",
    add_entry: "添加条目",
    edit_entry: "编辑条目",
    back: "返回列表",
    import: "导入",
    import_help: "CSV（列：id、lang、questions、answer、category；多个问题用 | 分隔）或 JSON（条目数组）。\
                  带 id 的行更新该条目，不带 id 的行新增条目。其他列会报错，出错的文件不会改动任何内容。",
    format: "格式",
    file: "文件",
    file_text: "或粘贴文件内容",
    export: "导出",
    try_it: "试一试",
    try_help: "输入访客可能说的话：查看最匹配的三个条目、分数，以及机器人会怎么做。",
    try_button: "试一试",
    score: "分数",
    decision: "机器人会",
    decision_answer: "用这个条目回答",
    decision_model: "询问大模型，并以这些条目为参考",
    decision_judge: "请大模型判断这些条目中哪一个能回答（都不能时由它作答）",
    decision_human: "提供转人工",
    decision_related: "提供转人工，并把相关问题作为快捷回复",
    decision_handoff: "转给人工客服（转人工用语）",
    decision_off: "不作回应：本站点的机器人已关闭",
    no_match: "没有任何条目匹配。",
    threshold_now: "当前阈值",
    settings: "设置",
    enabled: "由机器人接待新会话",
    name: "向访客显示的名称",
    threshold: "阈值",
    threshold_help: "条目答案直接发送所需的最低置信度（0 到 1，即该条目能回答这条消息的估计概率）。",
    greeting: "欢迎语（留空则不发送）",
    system_prompt: "给大模型的指令",
    idle_close: "仅机器人参与的会话在多久无消息后关闭（分钟）",
    idle_close_help: "没有人工参与的会话在这么长时间没有消息后自动关闭；0 表示从不关闭。",
    llm: "大模型",
    llm_help: "任何兼容 OpenAI 的接口；地址留空表示不使用。",
    base_url: "接口地址（base URL）",
    model: "模型",
    api_key: "API 密钥",
    api_key_help: "保存后不再显示；留空则保留已保存的密钥。",
    remove_key: "删除已保存的密钥",
    timeout_ms: "超时（毫秒）",
    handoff_phrases: "其他转人工说法",
    handoff_phrases_help: "每行一个，在内置说法（我要人工、talk to an agent 等）之外。",
    terms: "同义词",
    terms_help: "每行一组，例如 shipping = 运费 = 邮费，用任一种语言提问都能找到条目。",
    embeddings: "语义匹配（向量）",
    embeddings_help: "任何兼容 OpenAI 的 /v1/embeddings 接口（例如本机 Ollama 的 bge-m3）；地址留空则只按词语匹配。",
    unhelpful: "访客认为没有帮助的回答",
    unhelpful_help: "最新的差评在前：修改条目，或把这个问题加为新的问法。",
    no_unhelpful: "还没有差评。",
    asked: "访客的问题",
    when: "时间",
    source: "来源",
    conversation: "会话",
    saved: "已保存。",
    deleted: "已删除。",
    switch_to: "English",
    to_bot: "机器人设置",
    to_kb: "知识库",
    to_eval: "评估机器人",
    eval_title: "评估机器人",
    eval_help: "粘贴标注好的访客消息，每行一个 JSON 对象：{\"message\": \"…\", \"expected\": 条目 ID 或 null, \"lang\": \"zh\", \"kind\": \"paraphrase\"}。机器人会像对待真实访客一样为每条消息排序；下面的数字显示各个阈值下的效果。请在修改条目或设置之前写好这些消息，并留出一部分从不用于调整。",
    eval_messages: "条消息",
    eval_paste: "标注好的消息（JSON Lines）",
    eval_run: "开始评估",
    eval_no_entries: "本站点还没有知识库条目，无法评估。",
    eval_too_many: "消息太多，最多",
    eval_all: "全部",
    eval_by_threshold: "按阈值",
    eval_at_threshold: "当前阈值下，按语言和类型",
    eval_curve: "精确率–召回率曲线",
    eval_wrong: "当前阈值下的错误回答",
    eval_none_wrong: "当前阈值下没有错误回答。",
    eval_expected: "应为",
    eval_top: "最高条目",
    answered: "已回答",
    correct: "正确",
    precision: "精确率",
    recall: "召回率",
    threshold_word: "阈值",
    near_miss_answered: "近似误答率",
    unrelated_answered: "无关误答率",
};

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_language_follows_the_choice_then_the_browser() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::pick(None, &headers), Lang::En);
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("zh-CN,zh;q=0.9,en;q=0.8"));
        assert_eq!(Lang::pick(None, &headers), Lang::Zh);
        assert_eq!(Lang::pick(Some("en"), &headers), Lang::En);
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr, en-GB;q=0.5"));
        assert_eq!(Lang::pick(None, &headers), Lang::En);
    }
}
