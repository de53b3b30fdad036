"""The course's self-check questions, one tuple per notebook (``quiz("05")`` shows notebook 05's).

Each question is about the idea of its notebook, not a number printed in it. A multiple-choice question has
exactly one right choice, and every choice says why it is right or wrong (shown after the student picks it); a
numeric question has an answer, a tolerance, a hint shown after a wrong number and an explanation shown after
the right one. Text may use <b>, <i>, <code>, <sub> and <sup>; no other markup (it is shown as HTML in the widget
and as Markdown or plain text elsewhere). ``quiz.quiz_problems()`` and ``tests/test_quiz.py`` check the bank.
The two record types live here too, so that the data imports nothing; ``quiz.py`` (the widget and the logic)
imports them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """One option of a multiple-choice question: its text, why it is right or wrong, and whether it is right."""

    text: str
    why: str
    right: bool = False


@dataclass(frozen=True)
class Question:
    """A multiple-choice question (``choices``, exactly one right) or a numeric one (``answer`` within
    ``tolerance``).

    ``hint`` is shown after a wrong number (it must not give the number away); ``explanation`` after a right
    answer (for a multiple-choice question, after the right choice's own ``why``).
    """

    prompt: str
    choices: tuple[Choice, ...] = ()
    answer: float | None = None
    tolerance: float = 0.0
    hint: str = ""
    explanation: str = ""

    @property
    def numeric(self) -> bool:
        """True for a numeric question (it has an ``answer``), False for a multiple-choice one."""
        return self.answer is not None


QUIZZES: dict[str, tuple[Question, ...]] = {
    "00": (
        Question(
            "How does the course mask an image x with a map m in [0, 1]?",
            (
                Choice(
                    "Multiply the raw RGB pixels in [0, 1] by m, so hidden pixels become black; the model "
                    "normalises its input inside.",
                    "the model sees x ⊙ m, black where m = 0, as in the paper's AD/AG and Opti-CAM's objective.",
                    right=True,
                ),
                Choice(
                    "Multiply the normalised tensor (mean subtracted) by m.",
                    "after the model's normalisation, 0 is the mean colour: hidden pixels would become grey, "
                    "another substrate than the paper's black.",
                ),
                Choice(
                    "Blur the pixels where m is small.",
                    "blurring is extremal perturbations' substrate (notebook 06), not the one of AD, AG and "
                    "Opti-CAM.",
                ),
            ),
        ),
        Question(
            "Which class does the course explain by default, as the paper does in its evaluation?",
            (
                Choice(
                    "The ground-truth class of each image.",
                    "the paper evaluates the ground truth (appendix C compares other targets), so the course does "
                    "too; for a misclassified photo this shows where the model would see the true class.",
                    right=True,
                ),
                Choice(
                    "The class the model predicts.",
                    "a natural choice for debugging a prediction, and one option (targets=None), but not the "
                    "paper's default in its tables.",
                ),
                Choice(
                    "All 1,000 classes at once.",
                    "a saliency map explains one class score; several classes need several maps (notebook 11).",
                ),
            ),
        ),
        Question(
            "The laptop profile uses 10 photos and efficientnet_lite0; the paper 50,000 ImageNet images and ResNet50. "
            "Which conclusion is most likely to carry over?",
            (
                Choice(
                    "Relative, scale-free statements, such as a one-pixel map fooling AD and AI.",
                    "they follow from the metrics' definitions and the methods' mechanics, not from one model "
                    "or ten photos.",
                    right=True,
                ),
                Choice(
                    "The exact AD and AG values of each method.",
                    "absolute numbers depend on the model, the images and their number: every table of the "
                    "course says 'not the paper's numbers'.",
                ),
                Choice(
                    "A one-point difference in AG between two methods.",
                    "on ten photos one image moves AG by several points: small differences are noise here.",
                ),
            ),
        ),
    ),
    "01": (
        Question(
            "In eq. (1), S = h(Σ<sub>k</sub> w<sub>k</sub> A<sup>k</sup>). What distinguishes CAM, Grad-CAM, "
            "XGrad-CAM and their relatives from each other?",
            (
                Choice(
                    "The weights w<sub>k</sub> (and the function h).",
                    "all of them combine the same feature maps of a layer; only how each channel is weighted "
                    "(and whether a ReLU follows) differs.",
                    right=True,
                ),
                Choice(
                    "The feature maps A<sup>k</sup> they use.",
                    "at a given layer the feature maps are the same for every method: one forward pass.",
                ),
                Choice(
                    "How the map is upsampled to the image.",
                    "every method of the course upsamples bilinearly and normalises the same way (n(up(.))).",
                ),
            ),
        ),
        Question(
            "A network ends in global average pooling over a 7 × 7 grid and one linear layer whose weight from "
            "channel k to class c is 0.49. What is Grad-CAM's weight w<sub>k</sub> for that channel, the "
            "spatial mean of ∂y<sub>c</sub>/∂A<sup>k</sup>?",
            answer=0.01,
            tolerance=1e-4,
            hint="Write y_c as the linear weight times the average of A^k over the grid, plus a bias, and "
            "differentiate with respect to one cell: how many cells share the average?",
            explanation="y_c = Σ_k w_k^c GAP(A^k) + b_c, so ∂y_c/∂A^k_ij = w_k^c / (h w) = 0.49 / 49 at every "
            "cell: Grad-CAM's weight is CAM's divided by 49, a factor that the normalisation removes.",
        ),
        Question(
            "Why does Grad-CAM apply a ReLU after the weighted sum?",
            (
                Choice(
                    "To keep only the regions that raise the class score.",
                    "without it, the min-max normalisation maps the most negative cell to 0 and shifts the "
                    "rest up, so 'against the class' and 'neutral' become hard to tell apart.",
                    right=True,
                ),
                Choice(
                    "To make the map differentiable.",
                    "a ReLU is less smooth than the identity, not more; the map needs no derivative anyway.",
                ),
                Choice(
                    "To make the weights sum to 1.",
                    "the ReLU acts on the map, after the sum; weights that sum to 1 are Score-CAM's and "
                    "Opti-CAM's softmax.",
                ),
            ),
        ),
        Question(
            "At the last layer of a network ending in global average pooling and one linear layer, Grad-CAM, "
            "XGrad-CAM and HiRes-CAM give identical maps. Why?",
            (
                Choice(
                    "The gradient ∂y<sub>c</sub>/∂A<sup>k</sup> is the same number at every cell of a map, so "
                    "every way of weighting it agrees.",
                    "with a constant gradient per map, its mean (Grad-CAM), its A-weighted mean (XGrad-CAM) and "
                    "the cell-by-cell product summed over channels (HiRes-CAM) give the same map.",
                    right=True,
                ),
                Choice(
                    "They are the same algorithm under three names.",
                    "at an earlier layer, where the gradient varies over the map, the notebook shows them part "
                    "ways.",
                ),
                Choice(
                    "It happens on ResNet50 only, by chance.",
                    "it follows from the GAP + linear ending: efficientnet_lite0 shows it too, and VGG16 "
                    "(several linear layers) does not.",
                ),
            ),
        ),
    ),
    "02": (
        Question(
            "What does Score-CAM's score u<sub>k</sub> of channel k measure (eq. 3)?",
            (
                Choice(
                    "The class logit of the image masked by channel k's upsampled, normalised map, minus the "
                    "logit of a black image.",
                    "Score-CAM uses each feature map as a mask and measures what the masked image does to the "
                    "class score: one forward pass per channel.",
                    right=True,
                ),
                Choice(
                    "The spatial mean of the gradient of the class logit with respect to A<sup>k</sup>.",
                    "that is Grad-CAM's weight (eq. 2); Score-CAM never looks at a gradient.",
                ),
                Choice(
                    "The weight of channel k in the network's last linear layer.",
                    "that is CAM's weight; it needs a GAP + linear ending, Score-CAM does not.",
                ),
            ),
        ),
        Question(
            "On one image, a channel is zero everywhere (its ReLU never fires). What does Score-CAM's mask "
            "n(up(A<sup>k</sup>)) become, and what follows?",
            (
                Choice(
                    "All zeros: the masked image is the black baseline, u<sub>k</sub> = 0 exactly, and the "
                    "forward pass can be skipped.",
                    "range normalisation of a constant map gives zeros (the library's choice, rather than NaN), "
                    "so the score is known without running the network.",
                    right=True,
                ),
                Choice(
                    "All ones: the whole image is kept.",
                    "(A - min A) / (max A - min A) has nothing to stretch on a constant map; the library "
                    "returns zeros, never ones.",
                ),
                Choice(
                    "NaN, which breaks the softmax.",
                    "that is what a division by max A - min A = 0 would give; the library (and your exercise "
                    "solution) returns zeros instead.",
                ),
            ),
        ),
        Question(
            "One masked forward pass costs 25 ms on some machine. How many seconds do Score-CAM's masked passes "
            "take for one image at a layer with 1,280 channels?",
            answer=32.0,
            tolerance=0.5,
            hint="Score-CAM makes one masked forward pass per channel, and nothing in one pass depends on another.",
            explanation="1,280 passes × 25 ms = 32 s: the time grows linearly with the number of channels.",
        ),
        Question(
            "Eq. (3) scores each channel alone. Two channels that each cover half of the cat may each score low "
            "although their sum would score high. What finds the best combination?",
            (
                Choice(
                    "Maximising the score of the image masked by a weighted sum of all channels, over the weights.",
                    "that is eq. (5)-(6): with softmax weights and gradient ascent it is Opti-CAM (notebook 03).",
                    right=True,
                ),
                Choice(
                    "A sharper softmax over the single-channel scores.",
                    "a sharper softmax only concentrates the weight on the channels that score well alone.",
                ),
                Choice(
                    "Scoring every pair of channels.",
                    "K(K - 1)/2 more forward passes (about 800,000 at K = 1,280), and triples would still be "
                    "missed.",
                ),
            ),
        ),
    ),
    "03": (
        Question(
            "Opti-CAM starts from u = 0.5 in every channel. What are the starting channel weights softmax(u)?",
            (
                Choice(
                    "1/K each: uniform weights, the average of all feature maps.",
                    "the softmax of a constant vector is uniform, whatever the constant (u = 0 would give the same "
                    "weights and the same gradients).",
                    right=True,
                ),
                Choice(
                    "0.5 each.",
                    "the softmax makes the weights sum to 1, so K weights of 0.5 are impossible for K > 2.",
                ),
                Choice(
                    "Score-CAM's weights.",
                    "Opti-CAM does not run Score-CAM first; it starts from uniform weights.",
                ),
            ),
        ),
        Question(
            "What does Opti-CAM maximise over u (eq. 9-10)?",
            (
                Choice(
                    "The logit of class c on the image masked by n(up(S(x; u))).",
                    "F is the class score of the masked image: the mask must keep what the model needs for the "
                    "class.",
                    right=True,
                ),
                Choice(
                    "The class probability on the whole, unmasked image.",
                    "that does not depend on u at all: the image is not masked.",
                ),
                Choice(
                    "The area of the mask.",
                    "a larger mask is not the goal; the range normalisation even forces some pixel to 0 and "
                    "some to 1.",
                ),
                Choice(
                    "The agreement with Grad-CAM's map.",
                    "Opti-CAM never looks at Grad-CAM; the notebook compares them afterwards.",
                ),
            ),
        ),
        Question(
            "Adam's first step, with learning rate 0.1: by how much does each u<sub>k</sub> change (ignore ε)?",
            answer=0.1,
            tolerance=1e-3,
            hint="After one gradient g, Adam's bias-corrected moments are m̂ = g and v̂ = g². "
            "Divide one by the square root of the other.",
            explanation="m̂ / √v̂ = g / |g| = ±1, so every channel moves by the learning rate, up or down, whatever "
            "the size of its gradient.",
        ),
        Question(
            "Why does Opti-CAM need no area or smoothness regulariser, unlike masks optimised pixel by pixel?",
            (
                Choice(
                    "Its masks are normalised combinations of upsampled feature maps: smooth by construction, "
                    "with only K unknowns (eq. 12).",
                    "the feature maps restrict what a mask can look like, so there is nothing left for a "
                    "regulariser to enforce.",
                    right=True,
                ),
                Choice(
                    "Adam regularises the solution implicitly.",
                    "Adam is only the optimiser; a pixel-wise mask optimised with Adam still needs a regulariser.",
                ),
                Choice(
                    "100 iterations are too few to overfit.",
                    "the number of iterations does not change what masks are possible: the parametrisation does.",
                ),
            ),
        ),
    ),
    "04": (
        Question(
            "One forward pass takes F = 10 ms, one backward pass B = 20 ms per image, and the layer has "
            "K = 2,048 channels. Up to how many Opti-CAM iterations T is Opti-CAM (F + T(F + B)) cheaper than "
            "Score-CAM ((K + 1) F)?",
            answer=682,
            tolerance=0.7,  # 682 and the boundary 682.67 pass; 683 is already dearer than Score-CAM
            hint="Cancel the feature pass that both pay, then solve T (F + B) < K F for T.",
            explanation=(
                "T (F + B) < K F gives T < K / (1 + B/F) = 2,048 / 3 ≈ 682.7: up to 682 iterations (683 already "
                "costs more than Score-CAM), far above the paper's 100."
            ),
        ),
        Question(
            "Which of these changes Opti-CAM's maps, beyond float rounding?",
            (
                Choice(
                    "Mixed precision (float16 or bfloat16 passes).",
                    "fewer bits per number change the masked scores and so the path of u a little: the maps "
                    "change slightly.",
                    right=True,
                ),
                Choice(
                    "Optimising 8 images in one batch instead of one at a time.",
                    "the gradient of Σ_i F_i with respect to u_i is image i's own, and Adam is element-wise: the "
                    "same maps.",
                ),
                Choice(
                    "Freezing the network's parameters.",
                    "dF/du does not depend on whether the parameters' gradients are computed too: the same maps, "
                    "less work.",
                ),
                Choice(
                    "Computing the feature maps once instead of at every iteration.",
                    "A<sup>k</sup> depends on the image, not on u: recomputing it gives the same numbers.",
                ),
            ),
        ),
        Question(
            "Score-CAM makes K masked forward passes, Opti-CAM T forward and backward passes. Why can Score-CAM "
            "be faster on a GPU than this count suggests?",
            (
                Choice(
                    "Its masked images are independent and fill the GPU in large batches; Opti-CAM's iterations "
                    "depend on each other.",
                    "a pass does not always cost the same: per image it is far cheaper in a batch of 256 than in "
                    "a batch of 8 on a GPU.",
                    right=True,
                ),
                Choice(
                    "It needs no backward pass.",
                    "that is already in the count (F against F + B).",
                ),
                Choice(
                    "It skips most channels.",
                    "skipping the channels that are constant on the image is exact (59 % on the cat, notebook 02), but the "
                    "library's scorecam runs all K, and the count assumes so.",
                ),
            ),
        ),
        Question(
            "u lives at layer ℓ. Why must Opti-CAM's backward pass go all the way down to the input?",
            (
                Choice(
                    "F is the score of the masked input: u changes the mask, the mask multiplies the image, and "
                    "the gradient flows back through the whole network to the mask.",
                    "follow eq. (10): u → weights → map → mask → x ⊙ mask → the network → F.",
                    right=True,
                ),
                Choice(
                    "To update the network's parameters.",
                    "the parameters are frozen; only u is optimised.",
                ),
                Choice(
                    "It does not: like Grad-CAM's, it stops at layer ℓ.",
                    "Grad-CAM differentiates the score of the unmasked image with respect to A; Opti-CAM "
                    "differentiates the score of a masked input.",
                ),
            ),
        ),
    ),
    "05": (
        Question(
            "Fake-CAM hides a single pixel. Why does it win AD and get an AI near 50 %?",
            (
                Choice(
                    "The masked image is almost the original: the probability barely drops (AD ≈ 0), and on about "
                    "half of the images it rises a little, which AI counts as a success.",
                    "AD weighs losses, AI counts images that gained however little: a map that changes nothing "
                    "exploits both.",
                    right=True,
                ),
                Choice(
                    "The pixel it hides is always the most important one.",
                    "it always hides the same pixel, whatever the image and the class.",
                ),
                Choice(
                    "The metrics are computed on a blurred image.",
                    "AD, AI and AG mask with black; nothing is blurred.",
                ),
            ),
        ),
        Question(
            "An image has p = 0.6 on the whole image and o = 0.8 on the masked image. What is its term of the "
            "average gain, [o − p]<sub>+</sub> / (1 − p), in percent?",
            answer=50.0,
            tolerance=0.05,
            hint="The gain is what the probability rose, divided by how much it could still rise.",
            explanation="(0.8 − 0.6) / (1 − 0.6) = 0.5, i.e. 50 %: the image gained half of what it could gain.",
        ),
        Question(
            "A map that hides nothing (all ones). What is its average gain, in percent?",
            answer=0.0,
            tolerance=1e-6,
            hint="With nothing hidden, compare o with p on every image.",
            explanation="o = p on every image, so no image gains: AG = 0 (and AD = 0, AI = 0). AG rewards a map "
            "only for what masking by it adds.",
        ),
        Question(
            "You raise a saliency map to the power 5. Which metrics can change?",
            (
                Choice(
                    "AD and AG, not insertion and deletion.",
                    "the power keeps the order of the pixels, which is all insertion and deletion use, but "
                    "changes the values, which are the mask of AD and AG.",
                    right=True,
                ),
                Choice(
                    "Insertion and deletion, not AD and AG.",
                    "the other way round: the order of the pixels does not change.",
                ),
                Choice(
                    "All four.",
                    "insertion and deletion use only the order of the pixels, which an increasing function keeps.",
                ),
                Choice(
                    "None of them.",
                    "AD and AG multiply the image by the map's values, and those change.",
                ),
            ),
        ),
    ),
    "06": (
        Question(
            "Extremal perturbations optimise a mask in pixel space under an area constraint R<sub>a</sub>. "
            "Why does Opti-CAM need none?",
            (
                Choice(
                    "Its mask can only be a normalised combination of the layer's feature maps, smooth and "
                    "with a few thousand unknowns at most.",
                    "the parametrisation does the regulariser's job (section 3 of the paper): the reason is the "
                    "span of the feature maps, not only the number of unknowns.",
                    right=True,
                ),
                Choice(
                    "It runs fewer iterations.",
                    "fewer iterations do not constrain the shape of a mask.",
                ),
                Choice(
                    "It blurs the image outside the mask.",
                    "Opti-CAM masks with black; blurring is extremal perturbations' substrate.",
                ),
            ),
        ),
        Question(
            "R<sub>a</sub>(m) is the mean of (sort(m) − r<sub>a</sub>)², with r<sub>a</sub> a fraction 1 − a of "
            "zeros then ones. A mask of 10 pixels, all equal to 0.5, with a = 0.2: what is R<sub>a</sub>?",
            answer=0.25,
            tolerance=1e-6,
            hint="r_a has 8 zeros and 2 ones here; every sorted value of the mask is 0.5.",
            explanation="every one of the 10 squared differences is 0.25, so R_a = 0.25: a flat grey mask is far "
            "from the binary mask with 20 % ones that R_a asks for, although its mean is not.",
        ),
        Question(
            "What does LIME fit to explain one image?",
            (
                Choice(
                    "A weighted linear (ridge) model of the class probability on which superpixels are kept, "
                    "over random samples near the image.",
                    "the surrogate's coefficients become the map; the samples are weighted by their similarity "
                    "to the full image.",
                    right=True,
                ),
                Choice(
                    "The gradient of the class logit with respect to the pixels.",
                    "that is a gradient method; GradientShap averages such gradients along paths from a baseline.",
                ),
                Choice(
                    "A convex combination of feature maps.",
                    "that is Opti-CAM's map (eq. 8); LIME never looks inside the network.",
                ),
            ),
        ),
    ),
    "07": (
        Question(
            "With non-negative feature maps (the ReLU6 of bn2), what is the smallest value a sigmoid-normalised "
            "mask (eq. 18) can take?",
            answer=0.5,
            tolerance=1e-6,
            hint="What is 1 / (1 + e^(−a)) for the smallest possible a?",
            explanation="σ(0) = 0.5: every pixel keeps at least half of its value, so the mask cannot hide "
            "anything, which is why sigmoid normalisation has the worst AD of the Mask rows.",
        ),
        Question(
            "The Diff objective (eq. 19) is −|g(x) − g(x ⊙ s)|. Why can it never give a large AG?",
            (
                Choice(
                    "It is maximal when the masked image keeps exactly the original score, so it has no "
                    "incentive to raise it.",
                    "AG rewards a rise of the probability; Diff penalises any change, a rise included.",
                    right=True,
                ),
                Choice(
                    "It cannot be differentiated.",
                    "|.| has a gradient everywhere except at 0, which is enough for Adam.",
                ),
                Choice(
                    "It needs more iterations than Mask.",
                    "at convergence it still aims at 'no change', whatever the number of iterations.",
                ),
            ),
        ),
        Question(
            "Why does a learning rate of 0.01 stay far behind 0.1 after 100 Adam iterations?",
            (
                Choice(
                    "Adam moves each u<sub>k</sub> by about the learning rate per step: 100 × 0.01 = 1 at most, "
                    "so the weights can differ by a factor of e² at most.",
                    "the softmax needs differences of several units in u to concentrate the weights; 0.01 has "
                    "not got there.",
                    right=True,
                ),
                Choice(
                    "It overshoots the optimum.",
                    "a smaller step overshoots less, not more.",
                ),
                Choice(
                    "Its gradients are smaller.",
                    "the gradient does not depend on the learning rate, and Adam's step hardly depends on the "
                    "gradient's size.",
                ),
            ),
        ),
    ),
    "08": (
        Question(
            "What does the energy pointing game (EP) of a map measure?",
            (
                Choice(
                    "The share of the map's mass that lies inside the object's box.",
                    "EP is a precision: mass in the box over the map's total mass.",
                    right=True,
                ),
                Choice(
                    "Whether the map's maximum lies inside the box.",
                    "that is the (standard) pointing game, SP.",
                ),
                Choice(
                    "The share of the box that the map covers.",
                    "that is a recall: how much of the box the map covers, not how much of the map lies in the box.",
                ),
            ),
        ),
        Question(
            "A map has mass 3 outside the box and 1 inside. What is its EP?",
            answer=0.25,
            tolerance=1e-6,
            hint="EP is the mass inside divided by the map's total mass.",
            explanation="1 / (3 + 1) = 0.25, however useful the mass outside the box may be to the model.",
        ),
        Question(
            "In the controlled world, the model uses the object and the context outside its box. What does a map "
            "equal to the box show?",
            (
                Choice(
                    "It scores perfectly on box metrics but misses evidence the model uses.",
                    "box-based localisation is not a ground truth for explanations: the box says where the object "
                    "is, not what the classifier relies on.",
                    right=True,
                ),
                Choice(
                    "It is the best possible explanation.",
                    "in the world the true evidence is measured, and it includes the context outside the box.",
                ),
                Choice(
                    "It scores poorly on box metrics.",
                    "it is a perfect localiser by construction.",
                ),
            ),
        ),
    ),
    "09": (
        Question(
            "In the model parameter randomisation test, layers are replaced by random ones from the top down. "
            "What should happen to the maps of a method that explains the model?",
            (
                Choice(
                    "They should change: similarity to the trained model's maps should fall.",
                    "a map that survives the randomisation of the model did not depend on what the model "
                    "learned.",
                    right=True,
                ),
                Choice(
                    "They should stay the same, since the image has not changed.",
                    "that is exactly the failure the test looks for: an edge detector behaves so.",
                ),
                Choice(
                    "They should become all zeros.",
                    "a random network still has activations and gradients; the maps change, they do not vanish.",
                ),
            ),
        ),
        Question(
            "Why are Fake-CAM and an edge detector part of the sanity checks?",
            (
                Choice(
                    "They ignore the model, so their similarity stays at 1: a useful test must fail them.",
                    "controls show that the test can detect a map that does not depend on the model.",
                    right=True,
                ),
                Choice(
                    "They are the best methods on the test.",
                    "they are built to fail it.",
                ),
                Choice(
                    "The paper recommends them as explanations.",
                    "Fake-CAM was designed to show that AD and AI can be fooled, not to explain.",
                ),
            ),
        ),
        Question(
            "What is the Spearman rank correlation between a map a with values in [0, 1] and its cube a³?",
            answer=1.0,
            tolerance=1e-6,
            hint="Spearman correlates ranks; does cubing change the order of values between zero and one?",
            explanation="cubing is increasing, so the ranks are the same and Spearman is exactly 1, although the "
            "values differ.",
        ),
    ),
    "10": (
        Question(
            "ViT-B/16 on a 224 × 224 image gives 197 tokens: one class token and the patch tokens. How many "
            "patches are there on each side of the grid?",
            answer=14.0,
            tolerance=0.0,
            hint="Drop the class token first, then take the square root.",
            explanation="196 patch tokens = 14 × 14 (224 / 16 = 14): laid out row by row, channels first, they are "
            "feature maps (N, K, 14, 14).",
        ),
        Question(
            "Why is Grad-CAM's map empty at the output of a ViT's last block?",
            (
                Choice(
                    "The head reads only the class token, so the gradient on every patch token there is exactly "
                    "zero.",
                    "nothing after that layer mixes the patch tokens into the class token: the paper takes the "
                    "input of the last block's attention instead.",
                    right=True,
                ),
                Choice(
                    "Transformers have no feature maps.",
                    "patch tokens reshaped to their grid are feature maps: every CAM method applies.",
                ),
                Choice(
                    "The attention weights are all equal there.",
                    "the attention weights do not enter Grad-CAM at all.",
                ),
            ),
        ),
        Question(
            "What does attention rollout ignore that Opti-CAM and Grad-CAM use?",
            (
                Choice(
                    "The target class: it gives the same map for every class.",
                    "rollout multiplies the attention matrices, (A + I)/2 per block; no class score enters.",
                    right=True,
                ),
                Choice(
                    "The residual connections.",
                    "the ½ I of (A + I)/2 is the residual connection.",
                ),
                Choice(
                    "The first blocks.",
                    "the product runs over every block, from the first to the last.",
                ),
            ),
        ),
        Question(
            "SM (eq. A7) = log max(0.05, |B_p| / hw) - log p^c, with p^c the class probability on the crop of the "
            "map's box. On the small ViT most methods' SM is negative, unlike every row of the paper's Table A8. "
            "Why?",
            (
                Choice(
                    "The crop of a tight box makes the model surer (p^c near 1), so -log p^c is about 0 and the "
                    "negative log-area term dominates.",
                    "a box smaller than the image has log(|B_p| / hw) < 0; on ImageNet p^c is often far from 1 and "
                    "a tight crop loses context, so -log p^c keeps SM positive there.",
                    right=True,
                ),
                Choice(
                    "The maps are negative.",
                    "maps are in [0, 1]; SM uses only their box and the class probability on its crop.",
                ),
                Choice(
                    "SM uses the full image's probability, which is above 1.",
                    "a probability is at most 1, and SM scores the crop, not the full image (appendix B).",
                ),
            ),
        ),
    ),
    "11": (
        Question(
            "What does iRprop+ use of each coordinate's gradient?",
            (
                Choice(
                    "Only its sign: the coordinate's step grows by 1.2 while the sign holds and halves when it "
                    "flips.",
                    "the size of the gradient never enters, which suits gradients that differ by orders of "
                    "magnitude across channels.",
                    right=True,
                ),
                Choice(
                    "Its size, scaled by a learning rate.",
                    "that is (stochastic) gradient ascent.",
                ),
                Choice(
                    "Its running mean divided by its running size.",
                    "that is Adam.",
                ),
            ),
        ),
        Question(
            "SGD with momentum never reached the paper's quality on the photos. Why?",
            (
                Choice(
                    "The gradient is tiny and very uneven across channels: momentum piles up on the few large "
                    "ones, the softmax saturates on one channel, and the other gradients vanish.",
                    "Adam's per-coordinate normalisation and iRprop+'s signs avoid this.",
                    right=True,
                ),
                Choice(
                    "Its learning rate was too small to move.",
                    "its learning rate was chosen so that the first step moves the most sensitive channel as "
                    "much as Adam's; it moved too much on a few channels.",
                ),
                Choice(
                    "SGD cannot maximise, only minimise.",
                    "ascent is descent on −F; the library's SGD ascends.",
                ),
            ),
        ),
        Question(
            "A per-image early stop (objective changing by less than 0.02 for 3 iterations) saved a large share "
            "of the passes but lowered AG. Why?",
            (
                Choice(
                    "With a constant learning rate the objective can pause and then climb again: the rule took a "
                    "pause for convergence.",
                    "a stopping rule must fit the optimiser: a smaller tolerance, a longer patience, or steps "
                    "that shrink by design.",
                    right=True,
                ),
                Choice(
                    "Stopped images are optimised with a worse learning rate.",
                    "a stopped image is simply no longer optimised; nothing else changes.",
                ),
                Choice(
                    "Stopped images leave the batch, and the smaller batch is what lowered the AG of the others.",
                    "a smaller batch changes the others' maps only by round-off, which section 1 measures: it "
                    "moved AG less than the early stop did. The loss comes from images stopped while their "
                    "objective was still climbing.",
                ),
            ),
        ),
        Question(
            "The paper's recipe, run on each photo alone instead of in one batch of four, gave visibly different "
            "maps. Why?",
            (
                Choice(
                    "Round-off: a batch of one runs other kernels, whose sums round in another order, and over "
                    "100 steps of an optimisation that is not convex such tiny differences can grow into another "
                    "map.",
                    "the two runs are the same mathematically (notebook 04, section 2); only the order of the "
                    "floating-point sums differs. Read a pass count measured on a few images as rough.",
                    right=True,
                ),
                Choice(
                    "Batch normalisation uses the statistics of the batch.",
                    "the classifier is in eval mode: batch norm uses its stored running statistics, the same for "
                    "any batch.",
                ),
                Choice(
                    "The images of a batch share one set of channel scores u.",
                    "each image has its own u_i; the batch's objective is a sum, whose gradient for u_i is image "
                    "i's own term (notebook 04, section 2).",
                ),
            ),
        ),
    ),
}
